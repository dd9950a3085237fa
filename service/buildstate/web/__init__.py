"""The aiohttp application: ``app.create_app`` builds it, ``routing`` is the table every endpoint is declared
in, ``routes/`` holds the handlers (one module per resource), ``requests`` parses what they read,
``middlewares/`` wraps every request, ``observe`` feeds the metrics and the access log. Nothing below this
package imports aiohttp's server side."""
