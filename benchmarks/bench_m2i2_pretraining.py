"""M2I2 pre-training step (ITC, ITM, MLM and MIM) with and without gradient checkpointing: samples/s, the memory held
for backward (activations), the peak of a whole step and the process's peak RSS, measured side by side in one process;
and the loss and gradients of both modes from the same weights and draws, which must be the same.

A step is what Trainer does per batch: forward (the model draws its patch masks, MLM masking and ITM negatives from
torch's generator), backward, AdamW, then `momentum_step()` (momentum encoders, queues, temperature), as
`MomentumUpdateCallback` calls it. Checkpointing is non-reentrant, on every ViT, MIM-decoder and text layer. The
default geometry is hidden 384 with 6 ViT and 6 text layers (3 of them fusion layers) and a 4-layer, 256-wide MIM
decoder, at the pre-training resolution (256 px); `--geometry base` is the released model.

    python benchmarks/bench_m2i2_pretraining.py                     # cpu geometry, batch 8, 30-token captions
    python benchmarks/bench_m2i2_pretraining.py --geometry base     # the released model (slow on a CPU)
    python benchmarks/bench_m2i2_pretraining.py --geometry tiny --batch-size 2 --caption-length 6 --repeats 1
"""

from bench_utils import (
    CHECKPOINTING_MODES, Trainee, base_parser, compare_checkpointing, describe_machine, m2i2_config, setup,
)

import torch  # after bench_utils, which sets the OpenMP wait policy

from medvlp_hf import M2I2ForPreTraining


def caption_batch(config, args):
    """Captions `[CLS] w_1..w_n` of `--caption-length` tokens and random normalised images."""
    generator = torch.Generator().manual_seed(args.seed)
    words = torch.randint(1000, 2000, (args.batch_size, args.caption_length - 1), generator=generator)
    size = config.vision_config.image_size
    return {
        "input_ids": torch.cat([torch.full((args.batch_size, 1), config.bos_token_id), words], dim=1),
        "attention_mask": torch.ones(args.batch_size, args.caption_length, dtype=torch.long),
        "pixel_values": torch.randn(args.batch_size, 3, size, size, generator=generator),
    }


def check_same_gradients(trainee, seed) -> None:
    """One forward and backward in each mode from the same weights and RNG state: the losses and every gradient."""
    (plain_loss, plain), (checkpointed_loss, checkpointed) = (
        trainee.loss_and_gradients(enabled, seed) for enabled in CHECKPOINTING_MODES.values()
    )
    difference = max((plain[name] - checkpointed[name]).abs().max().item() for name in plain)
    print(f"losses {plain_loss.item():.6f} (plain) and {checkpointed_loss.item():.6f} (checkpointed); "
          f"max |gradient difference| {difference:.1e} over {len(plain)} parameters")
    print(f"checkpointed loss and gradients equal to plain: "
          f"{plain.keys() == checkpointed.keys() and torch.equal(plain_loss, checkpointed_loss) and difference == 0}")


def main():
    parser = base_parser(__doc__.split("\n\n")[0], model="M2I2", geometries=("cpu", "base", "tiny"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--caption-length", type=int, default=30, help="caption tokens ([CLS] w_1..w_n)")
    args = parser.parse_args()
    setup(args)
    torch.manual_seed(args.seed)
    model = M2I2ForPreTraining(m2i2_config(args.geometry))
    trainee = Trainee(model, caption_batch(model.config, args))
    describe_machine()
    config = model.config
    vision, text = config.vision_config, config.text_config
    print(f"M2I2ForPreTraining geometry={args.geometry}: ViT {vision.hidden_size} wide x {vision.num_hidden_layers} "
          f"layers at {vision.image_size} px, text encoder {text.hidden_size} wide x {text.num_hidden_layers} layers "
          f"(fusion from layer {text.fusion_layer}), MIM decoder {config.mim_decoder_config.hidden_size} wide x "
          f"{config.mim_decoder_config.num_hidden_layers} layers; objectives "
          f"{', '.join(config.pretraining_objectives)}; "
          f"batch {args.batch_size} x {args.caption_length} caption tokens; "
          f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f}M trainable parameters")
    check_same_gradients(trainee, args.seed)
    compare_checkpointing(trainee, args.batch_size, args.repeats, "pre-training step (ITC + ITM + MLM + MIM)")
    describe_machine()


if __name__ == "__main__":
    main()
