from vprlab.losses.factory import build_loss
from vprlab.losses.metric import MinedMetricLoss, multi_similarity

__all__ = ["MinedMetricLoss", "build_loss", "multi_similarity"]
