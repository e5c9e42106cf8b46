"""Tool-use data: the Sample record, loaders, the synthetic generator, difficulty buckets."""

from itool_ray.data.schema import CATEGORIES, Sample, SampleError

__all__ = ["CATEGORIES", "Sample", "SampleError"]
