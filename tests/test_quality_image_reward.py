"""ImageReward: a real forward pass of the package's ImageReward class (random weights), offline.

Runs where the ``image-reward`` extra is installed (the CI venv, see docs/calibration.md) and is
skipped elsewhere. Not ``pytest.importorskip("ImageReward")``: importing the package fails on
transformers 5 *without* the compatibility layer, and importorskip would turn exactly the
breakage this test guards against into a silent skip.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

if importlib.util.find_spec("ImageReward") is None:
    pytest.skip("the image-reward extra is not installed", allow_module_level=True)

from ecad.quality import build_scorer  # noqa: E402
from ecad.quality._image_reward_compat import ImageRewardUnavailable, load_blip_tokenizer  # noqa: E402

WORDS = "a an the of photo cat dog red blue green circle square at top bottom left right and".split()
# BLIP's text side, shrunk: hidden size stays 768 (the reward head's input), one layer
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 256,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 40,
    "encoder_width": 1024, "add_cross_attention": True,
}


def write_model_folder(folder, words=WORDS):
    (folder / "tokenizer").mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "med_config.json").write_text(json.dumps(MED_CONFIG))
    return folder


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    folder = write_model_folder(tmp_path_factory.mktemp("image-reward"))
    scorer = build_scorer("image-reward", model=str(folder), random_init=True, batch_size=2)
    # A randomly initialised head (std 1/769) gives a constant score: set weights that pass
    # the text-image features through, so the test sees the real network respond.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in scorer.model.mlp.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.05 if "weight" in name else 0.0))
    return scorer


def test_real_forward_pass_on_tensors(scorer):
    assert type(scorer.model).__name__ == "ImageReward" and type(scorer.model).__module__.startswith("ImageReward")
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))  # not square, not 224
    prompts = ["a red circle at the top left", "a blue square", "a photo of a cat"]
    scores = scorer.score(x, prompts)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert scores.std() > 1e-3, "different images and prompts must score differently"
    alone = scorer.score(x[1:2], prompts[1:2])
    assert torch.allclose(alone, scores[1:2], rtol=1e-4, atol=1e-4), "batching must not change a score"
    assert not torch.allclose(scorer.score(x, prompts[::-1]), scores), "the prompt matters"


def test_tokenizer_reads_the_local_vocabulary(scorer):
    ids = scorer.model.blip.tokenizer("a photo of a cat")["input_ids"]
    assert len(ids) == 7 and scorer.model.blip.tokenizer.unk_token_id not in ids
    assert scorer.model.blip.tokenizer.enc_token_id == scorer.model.blip.tokenizer.convert_tokens_to_ids("[ENC]")


def test_missing_or_empty_files_fail_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ImageRewardUnavailable, match="hub is offline"):
        build_scorer("image-reward", model="THUDM/ImageReward")
    folder = write_model_folder(tmp_path / "model")
    with pytest.raises(ImageRewardUnavailable, match="no ImageReward checkpoint"):
        build_scorer("image-reward", model=str(folder))  # weights missing, random_init not asked for
    with pytest.raises(ImageRewardUnavailable, match="bert-base-uncased"):
        load_blip_tokenizer("bert-base-uncased")  # offline: no silent empty tokenizer
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageRewardUnavailable, match="vocab.txt"):
        load_blip_tokenizer(tmp_path / "empty")
    useless = write_model_folder(tmp_path / "useless", words=[])
    with pytest.raises(ImageRewardUnavailable, match="empty or unusable"):
        load_blip_tokenizer(useless / "tokenizer")
