"""``webda make-dataset`` (write the generated dataset) and ``webda prepare-data`` (keyframes and
overlap removal on any dataset root)."""

from __future__ import annotations

import time

from webda.errors import UserError


def add_parser(subparsers) -> None:
    from webda.data.synthetic import DATASET_PRESETS

    make = subparsers.add_parser(
        "make-dataset", help="write the generated webly-supervised dataset (JPEG + H.264 MP4)"
    )
    make.add_argument("--out", required=True, help="output folder (new or empty)")
    make.add_argument("--preset", choices=sorted(DATASET_PRESETS), default="small", help="size (default: small)")
    make.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    make.add_argument("--classes", type=int, default=None, metavar="K",
                      help="number of classes, 2-14 (default: the preset's)")
    make.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    make.set_defaults(func=_make_dataset)

    prep = subparsers.add_parser(
        "prepare-data", help="check a dataset root, cache shot keyframes, remove web/target overlap"
    )
    prep.add_argument("root", help="dataset root (web_images/, web_videos/, target/)")
    prep.add_argument("--cache", default=None, help="cache folder (default: ROOT/.webda_cache)")
    prep.add_argument("--threshold", type=float, default=0.9, help="cosine similarity above which a web item is dropped")
    prep.add_argument("--min-shot-len", type=int, default=15, help="shortest shot, in frames (default: 15)")
    prep.add_argument("--image-side", type=int, default=512, metavar="PX",
                      help="keyframes and copies of larger web images are cached at this shorter side (default: 512)")
    prep.add_argument("--workers", type=int, default=None, metavar="N",
                      help="processes for checking files, keyframes and embedding (default: one per core)")
    prep.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    prep.set_defaults(func=_prepare_data)


def _make_dataset(args) -> int:
    from webda.data.synthetic import CARD_NAME, generate

    start = time.perf_counter()
    try:
        card = generate(args.out, args.preset, args.seed, num_classes=args.classes, show_progress=args.progress)
    except ValueError as err:
        raise UserError(str(err)) from err
    kinds = {}
    for item in card["items"]:
        kinds[item["domain"]] = kinds.get(item["domain"], 0) + 1
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    print(f"wrote {len(card['classes'])} classes ({counts}) to {args.out} "
          f"in {time.perf_counter() - start:.1f} s; ground truth in {args.out}/{CARD_NAME}")
    return 0


def _prepare_data(args) -> int:
    from webda.data.prepare import prepare

    try:
        data = prepare(args.root, args.cache, threshold=args.threshold, min_shot_len=args.min_shot_len,
                       image_side=args.image_side, workers=args.workers, show_progress=args.progress)
    except ValueError as err:
        raise UserError(str(err)) from err
    print(data.summary())
    return 0
