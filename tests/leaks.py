"""py-libp2p 0.8.1 leaves the TCP sockets of connections it dropped to the garbage collector.
That warning (and only that one) is not this project's to fix: modules that open libp2p
connections ignore it with `pytest.mark.filterwarnings(LEAKED_SOCKET)`."""

LEAKED_SOCKET = (
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
