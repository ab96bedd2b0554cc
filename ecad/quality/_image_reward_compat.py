"""A small compatibility layer that makes the unmaintained ``image-reward`` package (1.5) work on
``transformers`` 5 and offline.

What breaks, and what this module does about it (each fix is applied once, idempotently):

* ``ImageReward.models.BLIP.med`` imports ``apply_chunking_to_forward``, ``prune_linear_layer``
  and ``find_pruneable_heads_and_indices`` from ``transformers.modeling_utils``; they moved to
  ``transformers.pytorch_utils`` (the last one was removed). → re-exported before the import.
* BLIP's ``BertModel`` calls ``invert_attention_mask`` and ``get_head_mask``, which
  ``PreTrainedModel`` no longer has. → added to that class only (no global monkey-patching).
* transformers 5 wants ``post_init()`` at the end of a model's ``__init__`` (it sets up the
  weight-tying bookkeeping ``init_weights`` relies on); BLIP calls ``init_weights()`` directly.
  → BLIP's ``BertModel.init_weights`` runs ``post_init()`` first.
* ``init_tokenizer()`` hard-codes ``BertTokenizer.from_pretrained('bert-base-uncased')`` and
  ``tokenizer.additional_special_tokens_ids`` (gone in 5.x). Offline, transformers 5 silently
  builds an *empty* tokenizer ("a cat" → 4 ids) instead of failing, and every prompt then scores
  the same. → replaced by :func:`load_blip_tokenizer`, which takes an explicit local folder (or a
  hub id when online) and fails loudly when the vocabulary is missing or degenerate.
* ``ImageReward.load`` downloads ``med_config.json`` and the checkpoint from the hub and loads
  the state dict with ``strict=False`` (a wrong file silently gives a random model). →
  :func:`build_image_reward` resolves local files first, loads with ``weights_only=True`` and
  refuses checkpoints that leave weights missing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import torch

HUB_REPO = "THUDM/ImageReward"
CHECKPOINT_NAMES = ("ImageReward.pt", "ImageReward.safetensors")
MED_CONFIG_NAME = "med_config.json"
TOKENIZER_HUB_ID = "bert-base-uncased"
#: ImageReward's text side: prompts are cut to 35 tokens, as in the package
MAX_PROMPT_TOKENS = 35
#: BLIP's image normalisation (CLIP's mean/std) and input size
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224


class ImageRewardUnavailable(RuntimeError):
    """The package, its weights, its config or its tokenizer files cannot be found."""


_PATCHED = False
_tokenizer_source: list[str] = []  # stack read by the replacement init_tokenizer()


def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
    # the transformers 4.x implementation (removed in 5.x); only used by prune_heads()
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        head = head - sum(1 if h < head else 0 for h in already_pruned_heads)
        mask[head] = 0
    mask = mask.view(-1).contiguous().eq(1)
    index = torch.arange(len(mask))[mask].long()
    return heads, index


def _invert_attention_mask(self, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
    if encoder_attention_mask.dim() == 3:
        extended = encoder_attention_mask[:, None, :, :]
    else:
        extended = encoder_attention_mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers: int, is_attention_chunked: bool = False):
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=self.dtype)
    if is_attention_chunked:
        head_mask = head_mask.unsqueeze(-1)
    return head_mask


def _init_weights_after_post_init(self):
    # BLIP's BertModel.__init__ ends with init_weights(); transformers 5 needs post_init() to run
    # first (it computes all_tied_weights_keys) and post_init() itself calls init_weights().
    if "all_tied_weights_keys" not in self.__dict__:
        self.post_init()
        return
    type(self)._ecad_original_init_weights(self)


def patch_image_reward() -> Any:
    """Import the ``ImageReward`` package with the fixes above; returns the package module."""
    global _PATCHED
    try:
        import transformers.modeling_utils as modeling_utils
        import transformers.pytorch_utils as pytorch_utils
    except ImportError as err:  # pragma: no cover - transformers is a core dependency
        raise ImageRewardUnavailable(f"transformers is not importable: {err}") from err

    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, getattr(pytorch_utils, name))
    if not hasattr(modeling_utils, "find_pruneable_heads_and_indices"):
        modeling_utils.find_pruneable_heads_and_indices = getattr(
            pytorch_utils, "find_pruneable_heads_and_indices", _find_pruneable_heads_and_indices
        )

    try:
        import ImageReward as image_reward_package
        from ImageReward.models.BLIP import blip, blip_pretrain, med
    except ImportError as err:
        raise ImageRewardUnavailable(
            f"the image-reward package is not importable ({err}); install the extra: "
            "pip install 'ecad[image-reward]' (see docs/calibration.md for a torch/torchvision pair that works)"
        ) from err

    if not _PATCHED:
        if not hasattr(med.BertModel, "invert_attention_mask"):
            med.BertModel.invert_attention_mask = _invert_attention_mask
        if not hasattr(med.BertModel, "get_head_mask"):
            med.BertModel.get_head_mask = _get_head_mask
        if not hasattr(med.BertModel, "_ecad_original_init_weights"):
            med.BertModel._ecad_original_init_weights = med.BertModel.init_weights
            med.BertModel.init_weights = _init_weights_after_post_init
        # blip_pretrain did `from .blip import init_tokenizer`: replace the name it calls
        blip_pretrain.init_tokenizer = _init_tokenizer_from_source
        blip.init_tokenizer = _init_tokenizer_from_source
        _PATCHED = True
    return image_reward_package


def _init_tokenizer_from_source():
    if not _tokenizer_source:
        raise ImageRewardUnavailable(
            "ImageReward's tokenizer source was not set; build the model with build_image_reward()"
        )
    return load_blip_tokenizer(_tokenizer_source[-1])


@contextlib.contextmanager
def _tokenizer_from(source: str) -> Iterator[None]:
    _tokenizer_source.append(source)
    try:
        yield
    finally:
        _tokenizer_source.pop()


def load_blip_tokenizer(source: str | os.PathLike):
    """BLIP's BERT tokenizer (+ ``[DEC]`` bos and ``[ENC]`` tokens), from a folder or hub id.

    A folder must hold ``vocab.txt`` (or ``tokenizer.json``). A hub id is only tried when the
    hub is allowed (``HF_HUB_OFFLINE`` unset). Either way the result is checked: a tokenizer
    that cannot tokenize plain English is refused instead of silently scoring garbage.
    """
    from transformers import BertTokenizer

    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() or not any((path / n).is_file() for n in ("vocab.txt", "tokenizer.json")):
            raise ImageRewardUnavailable(
                f"ImageReward tokenizer folder {path} has no vocab.txt or tokenizer.json "
                f"(it needs the files of {TOKENIZER_HUB_ID!r})"
            )
        tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
    else:
        if _hub_offline():
            raise ImageRewardUnavailable(
                f"ImageReward needs the {TOKENIZER_HUB_ID!r} tokenizer files (vocab.txt) and "
                f"{source!r} is not a local folder while the hub is offline; download them once "
                f"(huggingface-cli download {TOKENIZER_HUB_ID} vocab.txt tokenizer_config.json) and "
                "pass the folder as tokenizer=PATH"
            )
        try:
            tokenizer = BertTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ImageRewardUnavailable(f"cannot load ImageReward tokenizer {source!r}: {err}") from err
    _check_tokenizer(tokenizer, source)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def _check_tokenizer(tokenizer, source: str) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in vocab]
    ids = tokenizer("a photo of a cat", add_special_tokens=False)["input_ids"]
    unknown = tokenizer.convert_tokens_to_ids("[UNK]") if "[UNK]" in vocab else None
    if missing or len(vocab) < 8 or not ids or all(i == unknown for i in ids):
        raise ImageRewardUnavailable(
            f"ImageReward tokenizer from {source!r} is empty or unusable "
            f"({len(vocab)} tokens, special tokens missing: {missing or 'none'}); "
            f"it needs the {TOKENIZER_HUB_ID!r} vocabulary"
        )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve_files(model: str | os.PathLike) -> tuple[Path | None, Path]:
    """(checkpoint or None, med_config) for a folder, a checkpoint file, or the hub repo id.

    A folder may hold only ``med_config.json`` (random weights are then the caller's explicit
    choice, see ``build_image_reward(random_init=True)``).
    """
    path = Path(str(model)).expanduser()
    if path.is_file():
        config = path.parent / MED_CONFIG_NAME
        if not config.is_file():
            raise ImageRewardUnavailable(f"{config} is missing (ImageReward's BLIP text config, next to {path.name})")
        return path, config
    if path.is_dir():
        config = path / MED_CONFIG_NAME
        if not config.is_file():
            raise ImageRewardUnavailable(f"{path} has no {MED_CONFIG_NAME} (ImageReward's BLIP text config)")
        checkpoint = next((path / n for n in CHECKPOINT_NAMES if (path / n).is_file()), None)
        return checkpoint, config
    if str(model) in (HUB_REPO, "ImageReward-v1.0"):
        if _hub_offline():
            raise ImageRewardUnavailable(
                f"ImageReward weights are not local and the hub is offline: download {HUB_REPO} "
                f"({CHECKPOINT_NAMES[0]}, {MED_CONFIG_NAME}) into a folder and pass model=FOLDER"
            )
        from huggingface_hub import hf_hub_download

        try:
            return (
                Path(hf_hub_download(HUB_REPO, CHECKPOINT_NAMES[0])),
                Path(hf_hub_download(HUB_REPO, MED_CONFIG_NAME)),
            )
        except Exception as err:
            raise ImageRewardUnavailable(f"cannot download ImageReward from {HUB_REPO}: {err}") from err
    raise ImageRewardUnavailable(
        f"ImageReward model {str(model)!r} is neither a folder, a checkpoint file, nor {HUB_REPO!r}"
    )


def _load_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(checkpoint))
    # a third-party torch checkpoint (a plain state dict): weights_only refuses arbitrary code
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_image_reward(
    model: str | os.PathLike = HUB_REPO,
    *,
    tokenizer: str | os.PathLike | None = None,
    device: str = "cpu",
    random_init: bool = False,
):
    """The package's ``ImageReward`` model class, built offline-capable and checked.

    ``model``: folder with ``ImageReward.pt`` (or ``.safetensors``) + ``med_config.json``, a
    checkpoint path, or the hub id. ``tokenizer``: folder with BERT's ``vocab.txt`` (default:
    ``<model>/tokenizer`` if present, else ``bert-base-uncased`` from the hub when online).
    ``random_init=True`` allows a folder without a checkpoint (tests only).
    """
    package = patch_image_reward()
    checkpoint, med_config = resolve_files(model)
    if checkpoint is None and not random_init:
        raise ImageRewardUnavailable(
            f"no ImageReward checkpoint ({' or '.join(CHECKPOINT_NAMES)}) in {model}; "
            f"download it from {HUB_REPO}"
        )
    if tokenizer is None:
        local = med_config.parent / "tokenizer"
        tokenizer = local if local.is_dir() else TOKENIZER_HUB_ID
    json.loads(Path(med_config).read_text())  # a clear JSON error before BLIP's own parsing

    with _tokenizer_from(str(tokenizer)):
        reward_model = package.ImageReward(med_config=str(med_config), device=device)
    vocab_size = reward_model.blip.text_encoder.config.vocab_size
    if len(reward_model.blip.tokenizer) > vocab_size:
        raise ImageRewardUnavailable(
            f"tokenizer has {len(reward_model.blip.tokenizer)} tokens but {med_config} says vocab_size={vocab_size}"
        )
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
        result = reward_model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing:
            raise ImageRewardUnavailable(
                f"{checkpoint} is not an ImageReward checkpoint: {len(missing)} weights missing "
                f"(e.g. {', '.join(missing[:3])})"
            )
    return reward_model.to(device).eval()
