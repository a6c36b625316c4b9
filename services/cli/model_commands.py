"""`shelfsight datasets`, `shelfsight train`, `shelfsight choose-views` and `shelfsight evaluate`.

Heavy ML imports happen inside the handlers, so the rest of the CLI stays quick.
"""

import argparse
import sys
from pathlib import Path

from services.cli import Commands, evaluation_commands
from services.errors import UserError
from services.settings import Settings


def register(commands: Commands) -> None:
    _register_datasets(commands)
    _register_train(commands)
    _register_choose_views(commands)
    _register_evaluate(commands)


def _register_datasets(commands: Commands) -> None:
    datasets = commands.add_parser("datasets", help="build datasets from packaged real product photos")
    kinds = datasets.add_subparsers(dest="dataset", required=True)
    fmnist = kinds.add_parser("fashion-mnist", help="Debian's Fashion-MNIST as an ImageFolder train/test tree")
    fmnist.add_argument("out", type=Path, help="folder to write train/ and test/ into")
    fmnist.add_argument("--per-class", type=int, default=None, help="keep at most N images per category and split")
    fmnist.add_argument("--source", type=Path, default=None, help="folder with the *-ubyte.gz files")
    fmnist.set_defaults(run=_fashion_mnist)
    catalogue = kinds.add_parser("catalogue", help="a product catalogue (JSON Lines) from the Fashion-MNIST photos")
    catalogue.add_argument("out", type=Path, help="JSON Lines file to write (publish it with `shelfsight publish products`)")
    catalogue.add_argument("--count", type=int, default=1000)
    catalogue.add_argument("--split", choices=["train", "test"], default="test")
    catalogue.add_argument("--seed", type=int, default=0)
    catalogue.set_defaults(run=_catalogue)
    evaluation_commands.register_datasets(kinds)


def _register_train(commands: Commands) -> None:
    train = commands.add_parser("train", help="train the product model on an ImageFolder dataset")
    train.add_argument("data", type=Path, help="one sub-folder of images per category")
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    train.add_argument(
        "--texts", type=Path, default=None, help="CSV or JSON Lines of file,title,description (default: DATA/texts.csv when present)"
    )
    train.add_argument("--no-texts", action="store_true", help="learn from the pictures alone (text still places products)")
    train.add_argument("--modality-dropout", type=float, default=None, help="share of picture+text samples shown one alone (0.2)")
    train.add_argument("--text-weight", type=float, default=None, help="the text's meaning in the fused vector, with a picture (0.5)")
    train.add_argument("--text-only-weight", type=float, default=None, help="the same, for products without a picture (2.0)")
    train.add_argument("--backbone", default="efficientnet-lite0", help="efficientnet-lite0 (default), resnet18, …")
    train.add_argument("--weights", default="default", help="default | torchvision | random | PATH to a state dict")
    train.add_argument("--mode", choices=["frozen", "finetune"], default="frozen")
    train.add_argument("--trainable-stages", type=int, default=6, help="finetune: backbone stages that learn")
    train.add_argument("--shift-cells", type=int, default=0, help="finetune: move cached activation maps by up to N cells (augmentation)")
    train.add_argument("--erase", type=float, default=0.0, help="finetune: chance of erasing a rectangle of the cached maps (augmentation)")
    train.add_argument("--input-size", type=int, default=None, help="pixels (default: the backbone's, 224)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--backbone-lr", type=float, default=5e-4)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--patience", type=int, default=3, help="epochs without improvement before stopping")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--per-class", type=int, default=None, help="use at most N images per category")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: CUDA when present)")
    train.add_argument("--no-cache", action="store_true", help="do not cache backbone features on disk")
    train.set_defaults(run=_train)


def _register_choose_views(commands: Commands) -> None:
    views = commands.add_parser(
        "choose-views",
        help="for a checkpoint trained before training chose it: whether it is served on each picture with its mirror image",
    )
    views.add_argument("checkpoint", type=Path)
    views.add_argument("data", type=Path, help="the folder it was trained on (its validation photos decide)")
    views.add_argument("--device", default=None)
    views.set_defaults(run=_choose_views)


def _register_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="measure a checkpoint and write a markdown report")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("data", type=Path, help="ImageFolder with the same category names")
    evaluate.add_argument("--out", type=Path, default=None, help="report folder (default: CHECKPOINT/report)")
    evaluate.add_argument("--texts", type=Path, default=None)
    evaluate.add_argument("--per-class", type=int, default=None)
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument(
        "--mirror-average",
        choices=["on", "off"],
        default=None,
        help="see each picture with its mirror image, as the services do (default: the checkpoint's choice)",
    )
    evaluate.set_defaults(run=_evaluate)


def _fashion_mnist(_settings: Settings, args: argparse.Namespace) -> int:
    from models.data import fashion_mnist

    try:
        counts = fashion_mnist.export_image_folder(args.out, args.source or fashion_mnist.DEBIAN_DIR, args.per_class)
    except fashion_mnist.DatasetMissing as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {counts['train']} training and {counts['test']} test images to {args.out}/{{train,test}}")
    return 0


def _catalogue(_settings: Settings, args: argparse.Namespace) -> int:
    from models.data.fashion_mnist import DatasetMissing
    from services.demo.catalogue import write_catalogue

    try:
        n = write_catalogue(args.out, args.count, args.split, args.seed)
    except DatasetMissing as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {n} products to {args.out}")
    return 0


def _train(settings: Settings, args: argparse.Namespace) -> int:
    text = {
        name: getattr(args, name) for name in ("modality_dropout", "text_weight", "text_only_weight") if getattr(args, name) is not None
    }  # unset: TrainConfig's defaults
    _check_training_arguments(args, text)
    # Training loads torch (seconds): only once the arguments have been checked.
    from models.checkpoint import CheckpointError
    from models.data.folder import DatasetError
    from models.encoders.registry import UnknownBackbone
    from models.training import TrainConfig, train

    config = TrainConfig(
        backbone=args.backbone,
        weights=args.weights,
        input_size=args.input_size,
        mode=args.mode,
        trainable_stages=args.trainable_stages,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        backbone_lr=args.backbone_lr,
        val_fraction=args.val_fraction,
        patience=args.patience,
        seed=args.seed,
        shift_cells=args.shift_cells,
        erase_probability=args.erase,
        device=args.device,
        cache_dir=None if args.no_cache else settings.cache_dir / "features",
        use_text=not args.no_texts,
        **text,
    )
    try:
        result = train(args.data, config, out=args.out, texts=args.texts, per_class=args.per_class, progress=sys.stderr.isatty())
    except (DatasetError, UnknownBackbone, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    print(
        f"best validation accuracy {result.best_val_accuracy:.4f} after {len(result.history)} epochs "
        f"in {result.seconds:.0f} s; checkpoint {result.card.model_version} written to {args.out}"
    )
    return 0


def _check_training_arguments(args: argparse.Namespace, text: dict[str, float]) -> None:
    if not 0 <= args.val_fraction < 1:
        raise UserError("--val-fraction must be at least 0 and below 1")
    if args.shift_cells < 0:
        raise UserError("--shift-cells must be 0 or more")
    if not 0 <= args.erase <= 1:
        raise UserError("--erase must be between 0 and 1")
    if not 0 <= text.get("modality_dropout", 0.0) <= 1 or text.get("text_weight", 0.0) < 0 or text.get("text_only_weight", 0.0) < 0:
        raise UserError("--modality-dropout must be between 0 and 1, and the text weights at least 0")


def _choose_views(_settings: Settings, args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError
    from models.data.folder import DatasetError
    from models.training.views import ViewsError, choose_views_for_checkpoint

    try:
        choice = choose_views_for_checkpoint(args.checkpoint, args.data, args.device)
    except (CheckpointError, DatasetError, ViewsError) as exc:
        raise UserError(str(exc)) from None
    served = "with its mirror image, features averaged" if choice.mirror_average else "once"
    print(
        f"validation accuracy {choice.once:.4f} seen once, {choice.mirrored:.4f} with mirror images averaged: "
        f"{args.checkpoint} is now served on each picture {served}"
    )
    return 0


def _evaluate(_settings: Settings, args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError
    from models.data.folder import DatasetError
    from models.evaluation.report import evaluate

    out = args.out or args.checkpoint / "report"
    try:
        result = evaluate(
            args.checkpoint,
            args.data,
            out,
            args.texts,
            args.per_class,
            device=args.device,
            progress=sys.stderr.isatty(),
            mirror_average=None if args.mirror_average is None else args.mirror_average == "on",
        )
    except (DatasetError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    m = result.metrics
    print(
        f"accuracy {m.accuracy:.4f}, macro-F1 {m.macro_f1:.4f}, top-3 {m.top_k_accuracy.get(3, float('nan')):.4f}, "
        f"ECE {m.expected_calibration_error:.4f} on {m.samples} images; report: {result.report}"
    )
    return 0
