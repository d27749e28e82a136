"""Serving a policy over the openpi websocket protocol: the wire codec and the server."""
