"""Retrain the bundled ecad-scenes model from scratch: VAE, reward network, then text encoder + DiT.

    ecad-train-bundled --out models/ecad-scenes            # everything, ~90 min on one shared core
    ecad-train-bundled --out DIR --stages dit             # one stage (earlier stages read from DIR)

Every stage uses fixed seeds and one CPU thread, and writes into the diffusers folder layout
(model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/, reward/). The DiT
stage checkpoints the whole pipeline every ``--eval-every`` steps, so a crash loses little, and
logs the reward of 20-step generations as it goes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ecad.zoo import scenes

# Hyperparameters: the model card (docs/model-card.md) quotes these.
VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=16,
    sample_size=scenes.IMAGE_SIZE,
)
TEXT_ENCODER_CONFIG = dict(
    vocab_size=len(scenes.VOCAB), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0,
)
TRANSFORMER_CONFIG = dict(
    num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4, num_layers=8,
    cross_attention_dim=128, sample_size=scenes.IMAGE_SIZE // 4, patch_size=1, caption_channels=128,
    use_additional_conditions=False, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
    dropout=0.0, attention_bias=True, activation_fn="gelu-approximate", norm_elementwise_affine=False,
    norm_eps=1e-6,
)
# The scheduler of the real PixArt-alpha pipelines (linear betas, 1000 steps, DPM-Solver++ 2M).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
    prediction_type="epsilon", algorithm_type="dpmsolver++", solver_order=2,
    lower_order_final=True, use_karras_sigmas=False,
)
SEEDS = dict(vae=1, reward=2, dit=3, eval=4, dit2=5)


def _log(log_file, **record):
    record = {"time": round(time.time(), 1), **record}
    line = json.dumps(record)
    print(line, flush=True)
    if log_file:
        with open(log_file, "a") as f:
            f.write(line + "\n")


def _one_cycle(step, total, warmup=100, floor=0.05):
    if step < warmup:
        return (step + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---------------------------------------------------------------- VAE
def train_vae(out: Path, steps: int, batch: int, log_file=None):
    from diffusers import AutoencoderKL

    torch.manual_seed(SEEDS["vae"])
    rng = np.random.default_rng(SEEDS["vae"])
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=1.5e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _one_cycle(s, steps, warmup=50))
    t0 = time.time()
    for step in range(steps):
        # All colour x shape pairs: the VAE is a generic image codec, not the thing being tested.
        _, x = scenes.random_batch(batch, rng)
        x = x * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        # Foreground pixels weigh 5x: on mostly black images plain MSE learns to blur shapes away.
        weight = 1 + 4 * (x.amax(1, keepdim=True) > -0.9).float()
        loss = (weight * ((rec - x) ** 2 + 0.5 * (rec - x).abs())).mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            mse = F.mse_loss(rec.detach(), x).item()
            _log(log_file, stage="vae", step=step, loss=round(loss.item(), 5),
                 psnr=round(10 * math.log10(4 / mse), 2), elapsed=round(time.time() - t0))
    # Scale latents to unit variance, as Stable Diffusion / PixArt VAEs do.
    vae.eval()
    with torch.no_grad():
        _, x = scenes.random_batch(1024, rng)
        latents = vae.encode(x * 2 - 1).latent_dist.mode()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    vae.save_pretrained(out / "vae")
    return time.time() - t0


# ---------------------------------------------------------------- reward network
def _reward_batch(batch, rng, vae):
    """Renders (half of them passed through the VAE, so VAE blur is in-distribution) + labels."""
    scene_list, x = scenes.random_batch(batch, rng)
    if vae is not None:
        half = batch // 2
        with torch.no_grad():
            rec = vae.decode(vae.encode(x[:half] * 2 - 1).latent_dist.sample()).sample
        x[:half] = (rec / 2 + 0.5).clamp(0, 1)
    # A little pixel noise so the network does not key on exact render statistics.
    x = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    shapes, colours = zip(*(s.cell_labels() for s in scene_list))
    return x, torch.tensor(shapes), torch.tensor(colours)


def train_reward(out: Path, steps: int, batch: int, log_file=None):
    from diffusers import AutoencoderKL

    from ecad.quality.scenes_reward import SceneRewardNet

    torch.manual_seed(SEEDS["reward"])
    rng = np.random.default_rng(SEEDS["reward"])
    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    net = SceneRewardNet(num_shapes=len(scenes.SHAPES), num_colours=len(scenes.COLOURS), grid=scenes.GRID)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _one_cycle(s, steps, warmup=30, floor=0.01))
    t0 = time.time()
    net.train()
    for step in range(steps):
        x, shapes, colours = _reward_batch(batch, rng, vae)
        s_logits, c_logits = net(x)
        loss = F.cross_entropy(s_logits.flatten(0, 1), shapes.flatten(), label_smoothing=0.02) + \
            F.cross_entropy(c_logits.flatten(0, 1), colours.flatten(), label_smoothing=0.02)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            _log(log_file, stage="reward", step=step, loss=round(loss.item(), 4), elapsed=round(time.time() - t0))
    net.eval()
    # Held-out check on fresh renders and fresh VAE reconstructions (a different seed).
    check_rng = np.random.default_rng(1000 + SEEDS["reward"])
    accs = {}
    with torch.no_grad():
        for name, v in (("renders", None), ("vae_reconstructions", vae)):
            x, shapes, colours = _reward_batch(512, check_rng, v)
            if v is not None:
                x = x[:256]; shapes = shapes[:256]; colours = colours[:256]
            s_logits, c_logits = net(x)
            ok = (s_logits.argmax(-1) == shapes) & (c_logits.argmax(-1) == colours)
            accs[name] = {"cell_accuracy": round(ok.float().mean().item(), 4),
                          "image_accuracy": round(ok.all(1).float().mean().item(), 4)}
    _log(log_file, stage="reward", held_out=accs)
    net.save(out / "reward", extra={"held_out_accuracy": accs, "train_steps": steps, "batch": batch})
    return time.time() - t0


# ---------------------------------------------------------------- text encoder + DiT
def _encode_dataset(vae, n: int, rng, batch: int = 256):
    """n training scenes (held-out pairs excluded): prompts and VAE latent means."""
    prompts, latents = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            scene_list, x = scenes.random_batch(min(batch, n - start), rng, exclude_pairs=scenes.HELD_OUT_PAIRS)
            prompts += [s.prompt for s in scene_list]
            latents.append(vae.encode(x * 2 - 1).latent_dist.mode() * vae.config.scaling_factor)
    return prompts, torch.cat(latents)


def build_pipeline(transformer, text_encoder, vae, tokenizer):
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    return PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER_CONFIG),
    )


def save_pipeline(pipe, out: Path):
    """save_pretrained, with a tokenizer class name that transformers 4 and 5 both load."""
    pipe.save_pretrained(out, safe_serialization=True)
    index_path = out / "model_index.json"
    index = json.loads(index_path.read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    for config_path in out.glob("*/config.json"):  # from_pretrained records a local path: do not ship it
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def generate_eval(pipe, prompts, seed, steps=20, guidance=4.5, batch=64):
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        gen = torch.Generator().manual_seed(seed + start)
        images.append(pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gen,
                           height=scenes.IMAGE_SIZE, width=scenes.IMAGE_SIZE, output_type="pt",
                           use_resolution_binning=False, clean_caption=False,
                           max_sequence_length=scenes.MAX_SEQUENCE_LENGTH).images)
    return torch.cat(images)


def train_dit(out: Path, steps: int, batch: int, dataset_size: int, eval_every: int, log_file=None,
              lr: float = 1.5e-3, ema_decay: float = 0.998, init_from: Path | None = None,
              seed: int = SEEDS["dit"], stage: str = "dit"):
    from diffusers import AutoencoderKL, DDPMScheduler, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from ecad.quality.scenes_reward import ScenesReward

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    tokenizer = scenes.build_tokenizer()
    t0 = time.time()
    prompts, latents = _encode_dataset(vae, dataset_size, rng)
    _log(log_file, stage=stage, dataset=len(prompts), encode_seconds=round(time.time() - t0))
    tokens = tokenizer(prompts + [""], max_length=scenes.MAX_SEQUENCE_LENGTH, padding="max_length",
                       truncation=True, return_tensors="pt")
    ids, mask = tokens.input_ids[:-1], tokens.attention_mask[:-1]
    empty_ids, empty_mask = tokens.input_ids[-1], tokens.attention_mask[-1]

    if init_from is not None:  # continue from a saved pipeline (its EMA weights), fresh optimiser
        text_encoder = T5EncoderModel.from_pretrained(init_from / "text_encoder")
        transformer = PixArtTransformer2DModel.from_pretrained(init_from / "transformer")
    else:
        text_encoder = T5EncoderModel(T5Config(**TEXT_ENCODER_CONFIG))
        transformer = PixArtTransformer2DModel(**TRANSFORMER_CONFIG)
        torch.nn.init.zeros_(transformer.proj_out.weight)  # start as a zero noise predictor (DiT init)
        torch.nn.init.zeros_(transformer.proj_out.bias)
    transformer.train()
    text_encoder.train()
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    ema = {"transformer": copy.deepcopy(transformer).eval(), "text_encoder": copy.deepcopy(text_encoder).eval()}
    for m in ema.values():
        m.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _one_cycle(s, steps, warmup=100))
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    eval_rng = np.random.default_rng(SEEDS["eval"])
    eval_prompts = [scenes.random_scene(eval_rng, exclude_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(64)]
    heldout_prompts = [scenes.random_scene(eval_rng, only_pairs=scenes.HELD_OUT_PAIRS).prompt for _ in range(32)]
    real = scenes.render_batch([scenes.parse_prompt(p) for p in eval_prompts], np.random.default_rng(0))
    reward = None  # loaded at the first evaluation: the reward stage may run alongside this one

    t0 = time.time()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(prompts), size=batch))
        x0 = latents[idx]
        b_ids, b_mask = ids[idx].clone(), mask[idx].clone()
        drop = torch.from_numpy(rng.random(batch) < 0.1)  # empty prompt: classifier-free guidance
        b_ids[drop], b_mask[drop] = empty_ids, empty_mask
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        xt = noise_sched.add_noise(x0, noise, t)
        emb = text_encoder(input_ids=b_ids, attention_mask=b_mask).last_hidden_state
        pred = transformer(xt, encoder_hidden_states=emb, encoder_attention_mask=b_mask, timestep=t,
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        weight = (snr[t].clamp(max=5.0) / snr[t]).view(-1, 1, 1, 1)  # min-SNR-5 for epsilon prediction
        loss = (weight * (pred - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, live in (("transformer", transformer), ("text_encoder", text_encoder)):
                for pe, p in zip(ema[name].parameters(), live.parameters()):
                    pe.lerp_(p, 1 - decay)
        if step % 50 == 0:
            _log(log_file, stage=stage, step=step, loss=round(loss.item(), 4), lr=round(sched.get_last_lr()[0], 6),
                 elapsed=round(time.time() - t0))
        if (step + 1) % eval_every == 0 or step == steps - 1:
            pipe = build_pipeline(ema["transformer"], ema["text_encoder"], vae, tokenizer)
            pipe.set_progress_bar_config(disable=True)
            save_pipeline(pipe, out)
            record = {"steps_done": step + 1, "steps_planned": steps, "batch": batch, "lr": lr,
                      "dataset_size": dataset_size, "train_seconds": round(time.time() - t0)}
            if reward is None and (out / "reward" / "model.safetensors").exists():
                reward = ScenesReward(out)
            if reward is not None:
                te = time.time()
                gen = generate_eval(pipe, eval_prompts, seed=0)
                gen_held = generate_eval(pipe, heldout_prompts, seed=1)
                real_reward = reward.score(real, eval_prompts).mean().item()
                r = reward.score(gen, eval_prompts).mean().item()
                record.update(eval_reward=round(r, 4), real_reward=round(real_reward, 4), ratio=round(r / real_reward, 3),
                              accuracy=round(reward.accuracy(gen, eval_prompts).mean().item(), 3),
                              held_out_pairs_reward=round(reward.score(gen_held, heldout_prompts).mean().item(), 4),
                              eval_seconds=round(time.time() - te))
            _log(log_file, stage=stage, **record)
            history_path = out / "training.json"  # one entry per DiT stage: the model card's numbers
            history = json.loads(history_path.read_text()) if history_path.exists() else {}
            if "dit_steps_done" in history:  # written by an older version of this script
                history = {}
            history[stage] = record
            history_path.write_text(json.dumps(history, indent=2) + "\n")
    return time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("models/ecad-scenes"))
    p.add_argument("--stages", default="vae,reward,dit,dit2", help="comma-separated subset of vae,reward,dit,dit2 "
                   "(dit2 continues the DiT from the saved folder at half the learning rate on fresh data)")
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--reward-steps", type=int, default=250)
    p.add_argument("--reward-batch", type=int, default=64)
    p.add_argument("--dit-steps", type=int, default=1500)
    p.add_argument("--dit-batch", type=int, default=64)
    p.add_argument("--dit-lr", type=float, default=1.5e-3)
    p.add_argument("--dataset-size", type=int, default=30000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--dit2-steps", type=int, default=800)
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue DiT training from this pipeline folder's transformer and text encoder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", type=Path, default=None, help="JSON-lines log file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    timings = {}
    if "vae" in stages:
        timings["vae_seconds"] = round(train_vae(args.out, args.vae_steps, 32, args.log))
    if "reward" in stages:
        timings["reward_seconds"] = round(train_reward(args.out, args.reward_steps, args.reward_batch, args.log))
    if "dit" in stages:
        timings["dit_seconds"] = round(train_dit(args.out, args.dit_steps, args.dit_batch, args.dataset_size,
                                                 args.eval_every, args.log, lr=args.dit_lr,
                                                 ema_decay=args.ema_decay, init_from=args.init_from))
    if "dit2" in stages:
        timings["dit2_seconds"] = round(train_dit(args.out, args.dit2_steps, args.dit_batch, args.dataset_size // 2,
                                                  args.eval_every, args.log, lr=args.dit_lr / 2,
                                                  ema_decay=args.ema_decay, init_from=args.out, seed=SEEDS["dit2"],
                                                  stage="dit2"))
    _log(args.log, stage="done", **timings)


if __name__ == "__main__":
    main()
