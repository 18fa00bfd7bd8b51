"""iotbaseline: network-based baseline auditing of IoT devices against ISO/IEC 27402:2023."""

__version__ = "0.1.0"
