"""The `medvlp` command: environment report, checkpoint conversion, parity verification, model cards.

Help must answer at once, so this module imports only the standard library at load time and is run without
importing its package (see medvlp_cli.py); each command imports torch, transformers and medvlp_hf when it runs.
"""

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

PACKAGES = ("medvlp-hf", "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "accelerate", "peft",
            "datasets", "evaluate", "pillow", "numpy", "pydicom", "pycocoevalcap", "scikit-learn")
SETTINGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HOME",
            "HF_HUB_CACHE", "MEDVLP_DATA_DIR", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
CONVERTER_PREFIX, CONVERTER_SUFFIX = "convert_", "_original_checkpoint.py"
EXIT_FAILED, EXIT_UNUSABLE = 1, 2  # failed check or conversion; nothing to check (usage, missing files)

DESCRIPTION = """\
medvlp-hf command line: medical vision-language models (MedViLL, ...) as transformers models.

  medvlp env                     versions and settings to paste into a bug report
  medvlp convert MODEL ...       convert the authors' original checkpoint to a medvlp-hf folder
  medvlp verify DIR              re-run a converted folder's parity record and compare
  medvlp card DIR                print or (re)write the model card of a converted folder

`medvlp COMMAND --help` explains each command."""


# --------------------------------------------------------------------------------------------------
# env
# --------------------------------------------------------------------------------------------------


def environment_report() -> dict:
    """Python, platform, installed versions of medvlp-hf and the packages it uses (without importing them) and
    the environment variables that change its behaviour (offline mode, caches, threads)."""
    report = {"python": platform.python_version(), "platform": platform.platform()}
    report.update({package: _installed_version(package) for package in PACKAGES})
    spec = importlib.util.find_spec("medvlp_hf")
    report["medvlp_hf location"] = str(Path(spec.origin).parent) if spec else "not importable"
    report.update({name: os.environ.get(name, "unset") for name in SETTINGS})
    return report


def _installed_version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _accelerators() -> dict:
    import torch

    return {"torch threads": torch.get_num_threads(),
            "cuda": f"{torch.cuda.device_count()} device(s), CUDA {torch.version.cuda}" if torch.cuda.is_available()
            else "not available",
            "mps": "available" if torch.backends.mps.is_available() else "not available"}


def run_env(args) -> int:
    report = environment_report()
    if not args.no_torch:
        report.update(_accelerators())
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        width = max(map(len, report))
        print("\n".join(f"{name:<{width}}  {value}" for name, value in report.items()))
    return 0


# --------------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------------


def converters() -> dict:
    """{model: first line of its converter's docstring}, read from the converter files without importing them."""
    spec = importlib.util.find_spec("medvlp_hf")
    folder = Path(spec.origin).parent / "conversion"
    found = {}
    for path in sorted(folder.glob(f"{CONVERTER_PREFIX}*{CONVERTER_SUFFIX}")):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.name[len(CONVERTER_PREFIX): -len(CONVERTER_SUFFIX)]] = docstring.split("\n", 1)[0]
    return found


def run_convert(model, argv) -> int:
    available = converters()
    if model not in available:
        print(f"medvlp convert: no converter for {model!r}; available: {', '.join(available)}.", file=sys.stderr)
        return EXIT_UNUSABLE
    module = importlib.import_module(f"medvlp_hf.conversion.{CONVERTER_PREFIX}{model}{CONVERTER_SUFFIX[:-3]}")
    try:
        module.main(argv, prog=f"medvlp convert {model}")
    except (ValueError, OSError) as error:  # CheckpointError, ParityRecordError, ParityMismatchError, missing files
        print(f"medvlp convert {model}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _convert_epilog():
    rows = [f"  {model:<12} {summary}" for model, summary in converters().items()]
    return ("models:\n" + "\n".join(rows) + "\n\n`medvlp convert MODEL --help` lists the options of one converter "
            "(checkpoint, kind, output folder, parity reference).")


# --------------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------------


def run_verify(args) -> int:
    from medvlp_hf.conversion import parity

    try:
        record = parity.read_record(args.folder)
        model = _load_model(args.folder, record.architecture)
        results = parity.check_record(model, record)
    except (parity.ParityRecordError, OSError, ValueError) as error:
        print(f"medvlp verify: cannot verify {args.folder}: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    failed = parity.failures(results)
    verdict = sys.stderr if args.json else sys.stdout  # with --json, stdout holds only the JSON
    if args.json:
        print(json.dumps({"folder": str(args.folder), "passed": not failed, "reference": record.reference,
                          "tolerance": record.tolerance, "results": results}, indent=1))
    else:
        width = max(map(len, results))
        print(f"{args.folder}: {record.architecture}, tolerance rtol {record.tolerance['rtol']:g} / atol "
              f"{record.tolerance['atol']:g} (integer outputs identical)")
        for key, result in results.items():
            diff = "-" if result["max_abs_diff"] is None else f"{result['max_abs_diff']:.3g}"
            print(f"  {key:<{width}}  {result['compare']:<8}  max |diff| {diff:<9}  {'ok' if result['passed'] else 'MISMATCH'}")
        print(f"reference: {parity.describe_reference(record)}")
        print(f"outputs: {parity.describe_comparisons(record)}")
    if failed:
        print(f"medvlp verify: FAILED: {args.folder} does not reproduce its parity record: {', '.join(failed)}.",
              file=sys.stderr)
        return EXIT_FAILED
    if record.reference["implementation"] != "original":
        message = ("the folder reproduces the outputs recorded when it was converted, but no reference from the "
                   "original implementation was recorded, so parity with it is not verified")
        if args.require_original:
            print(f"medvlp verify: FAILED (--require_original): {message}.", file=sys.stderr)
            return EXIT_FAILED
        print(f"medvlp verify: passed; note: {message}.", file=verdict)
        return 0
    print("medvlp verify: passed: the folder reproduces the original implementation's outputs.", file=verdict)
    return 0


def _load_model(folder, architecture):
    import transformers

    import medvlp_hf

    config = transformers.AutoConfig.from_pretrained(folder)
    model_class = getattr(medvlp_hf, architecture, None)
    if model_class is None or (config.architectures or [None])[0] != architecture:
        raise ValueError(f"the parity record is for {architecture}, but {folder}/config.json describes "
                         f"{config.architectures}.")
    return model_class.from_pretrained(folder).eval()


# --------------------------------------------------------------------------------------------------
# card
# --------------------------------------------------------------------------------------------------


def run_card(args) -> int:
    from medvlp_hf.conversion import conversion_utils, parity

    try:
        record = parity.read_record(args.folder)
        model_type = json.loads((Path(args.folder) / "config.json").read_text())["model_type"]
        if args.dataset:
            record.conversion["datasets"] = args.dataset
        card = conversion_utils.render_conversion_card(model_type, record, repo_id=args.repo_id)
    except (parity.ParityRecordError, OSError, ValueError, KeyError) as error:
        print(f"medvlp card: cannot render the card of {args.folder}: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.write:
        from medvlp_hf.hub import save_model_card

        print(f"wrote {save_model_card(card, args.folder)}")
    else:
        print(card)
    return 0


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(prog="medvlp", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medvlp-hf {_installed_version('medvlp-hf')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    env = commands.add_parser("env", help="versions and settings for a bug report",
                              description="Print Python, platform, the versions of medvlp-hf and the packages it uses, "
                                          "the offline/cache/thread environment variables and the accelerators torch "
                                          "sees. Paste the output into bug reports.")
    env.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    env.add_argument("--no_torch", action="store_true", help="skip the accelerator lines (they import torch)")

    convert = commands.add_parser(
        "convert", help="convert an original checkpoint", usage="medvlp convert MODEL [converter options]",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_convert_epilog(),
        description="Convert a checkpoint released with a paper's code into a medvlp-hf folder (safetensors\n"
                    "weights, processor, parity record, model card) that transformers' Auto classes load. The\n"
                    "converter checks every key of the file against its key table and, given --reference (a record\n"
                    "the parity harness made with the authors' code), that the converted outputs match it.")
    convert.add_argument("model", metavar="MODEL", help="one of the models listed below")

    verify = commands.add_parser(
        "verify", help="re-run a converted folder's parity record",
        description="Load a converted folder, run the inputs of its parity record (parity.json + parity.safetensors) "
                    "and compare with the recorded reference outputs (rtol/atol from the record; argmax and tokens "
                    f"identical). Exit status: 0 reproduced; {EXIT_FAILED} outputs differ (or, with "
                    f"--require_original, the reference is not the original implementation); {EXIT_UNUSABLE} no "
                    "record or the folder cannot be loaded.")
    verify.add_argument("folder", metavar="DIR", type=Path, help="a folder written by `medvlp convert`")
    verify.add_argument("--require_original", action="store_true",
                        help="fail unless the record's reference is the original implementation's output")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")

    card = commands.add_parser(
        "card", help="print or rewrite the model card of a converted folder",
        description="Render the model card (README.md) of a converted folder from its config and parity record: "
                    "provenance of the weights, parity status and differences, intended use, licences, citation. "
                    "Prints it, or writes README.md with --write.")
    card.add_argument("folder", metavar="DIR", type=Path, help="a folder written by `medvlp convert`")
    card.add_argument("--write", action="store_true", help="write DIR/README.md instead of printing")
    card.add_argument("--repo_id", help="the Hub repository the folder is published as (title and usage snippet)")
    card.add_argument("--dataset", action="append", help="training dataset id (repeatable; default: the one recorded "
                                                         "at conversion)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "convert" and not argv[1].startswith("-"):
        return run_convert(argv[1], argv[2:])
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_UNUSABLE
    return {"env": run_env, "verify": run_verify, "card": run_card}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
