"""Tiny in-process models shared by the model, retrieval and cache tests
(not a test module itself): a one-layer random text transformer, one-cell
images, the small generated catalogue they train on, and how to build a
registered model and a batch of rows from them."""

TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}
TINY_TEXT = {"params": {"max_length": 12, "random_init": TINY_BERT}}
TINY_IMAGE = {"params": {"image_size": 32, "grid": 1}}
TINY_ENCODERS = {"text_encoder": TINY_TEXT, "image_encoder": TINY_IMAGE}
# kbrec_synthetic generator settings of the model tests
TINY_DATA = {"seed": 5, "num_users": 120, "num_items": 60, "num_interactions": 3000,
             "history_len": 3, "image_size": 32}


def build_tiny(model: str, *overrides):
    """The registered ``model`` from its default config, merged with the
    overrides, built as MMF builds it, from seed 0."""
    import torch
    from mmf.utils.build import build_model
    from omegaconf import OmegaConf

    from mmf_rec.paths import config_path

    config = OmegaConf.load(config_path("models", f"{model}.yaml")).model_config[model]
    config = OmegaConf.merge(config, *overrides)
    config.model = model
    torch.manual_seed(0)
    return build_model(config)


def sample_batch(data, dataset_name: str, split: str, rows: int, dataset_type: str):
    """The split's first ``rows`` rows as the SampleList a loader would give."""
    from mmf.common.sample import SampleList

    from mmf_rec.data.dataset import KBRecDataset

    dataset = KBRecDataset(data, split, dataset_name=dataset_name, dataset_type=dataset_type)
    sample_list = SampleList(dataset.__getitems__(list(range(rows))))
    sample_list.dataset_name, sample_list.dataset_type = dataset_name, dataset_type
    return sample_list
