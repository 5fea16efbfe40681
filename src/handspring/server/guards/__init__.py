"""What stands before the routes: the API key and body limit, load shedding, the drain."""
