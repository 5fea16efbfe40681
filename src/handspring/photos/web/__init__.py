"""The web app: its API, its auth, thumbnails and the static UI."""
