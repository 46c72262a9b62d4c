"""FT-Mamba, FT-Transformer and MLP two-tower recommenders (tokenizer, encoders, scan kernels)."""

from recsim_ft.models.mamba import MambaBlock, MambaEmbedder
from recsim_ft.models.mlp import MLPEmbedder
from recsim_ft.models.presets import EMBEDDERS, PRESETS, ModelConfig, make_config
from recsim_ft.models.scan import selective_scan, selective_scan_reference
from recsim_ft.models.tokenizer import FeatureTensors, FeatureTokenizer
from recsim_ft.models.transformer import TransformerEmbedder
from recsim_ft.models.two_tower import TwoTower, param_counts, params_report

__all__ = [
    "EMBEDDERS",
    "PRESETS",
    "FeatureTensors",
    "FeatureTokenizer",
    "MLPEmbedder",
    "MambaBlock",
    "MambaEmbedder",
    "ModelConfig",
    "TransformerEmbedder",
    "TwoTower",
    "make_config",
    "param_counts",
    "params_report",
    "selective_scan",
    "selective_scan_reference",
]
