"""Image and text preprocessing, equal to the reference implementations."""
