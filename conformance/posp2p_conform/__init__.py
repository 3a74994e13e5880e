"""posp2p conformance suite: Scapy layers, codec helpers, virtual devices,
the device-under-test abstraction and the reporting plugin."""
__version__ = "1.0"
