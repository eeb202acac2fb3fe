"""streamrec: a real-time streaming recommendation scorer on Kafka and Faust."""

__version__ = "0.1.0"
