from vprlab.losses.metric import MinedMetricLoss, multi_similarity

__all__ = ["MinedMetricLoss", "multi_similarity"]
