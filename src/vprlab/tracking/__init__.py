from vprlab.tracking.logger import RunLogger, read_metrics

__all__ = ["RunLogger", "read_metrics"]
