"""`modelops`: a command-line client for CI/CD pipelines, standard library only.

It talks to the dashboard's public API with MODELOPS_URL and MODELOPS_TOKEN. Exit codes (also
in `modelops --help` and the README):

    0  success (or the gate holds nothing)
    1  gate failed: `status --fail-on` found a named condition
    2  bad input: usage, unreadable file, or the server refused the request (400/404/409/413)
    3  authentication or permission: no / bad token, or the token lacks scope or role (401/403)
    4  server unreachable: connection refused, DNS, TLS or timeout
    5  server error: 5xx or an answer that is not the API's JSON
"""

__version__ = "1.0.0"

EXIT_OK = 0
EXIT_GATE = 1
EXIT_INPUT = 2
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_SERVER = 5
