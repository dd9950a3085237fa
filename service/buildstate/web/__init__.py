"""The aiohttp application: ``app.create_app`` builds it, ``routes`` holds every endpoint."""
