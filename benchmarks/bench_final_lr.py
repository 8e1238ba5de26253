"""Which learning rate for the short final fine-tune of the fronts suite?  Same plan, same steps, several lrs.

Not a test.  Applies one plan to the pretrained model, fine-tunes it with KD from the original (SGD,
cosine, the fronts suite's recipe) for ``--steps`` steps at each ``--lrs`` value, and scores the test set.
Writes ``final_lr.json`` and ``final_lr.md`` (``final_lr_TAG.*`` with ``--tag``) to ``--out``.

    python benchmarks/bench_final_lr.py --plan benchmarks/results/fronts/plans/cifar_resnet20/baseline_ht2_e0.9.yaml
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    data_root,
    envelope,
    kd_finetune,
    load_pretrained,
    log,
    write_json,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", type=Path, required=True, help="a plan of the fronts suite (its model is the plan's)")
    p.add_argument("--lrs", default="0.01,0.002", help="comma-separated learning rates (default 0.01,0.002)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--test-subset", type=int, default=None, help="score on this many test images (default all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="write final_lr_TAG.json/.md (another budget beside the default run)")
    args = p.parse_args(argv)
    stem = f"final_lr_{args.tag}" if args.tag else "final_lr"

    import torch

    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.plan import Plan, apply_plan
    from automtd.train import evaluate

    torch.set_num_threads(args.threads)
    plan = Plan.load(args.plan)
    spec = get_model_spec(plan.architecture)
    common = {"root": data_root(), "mean": spec.mean, "std": spec.std}
    train = get_dataset("cifar10", "train", train_transform=True, **common)
    test = make_loader(get_dataset("cifar10", "test", subset=args.test_subset, **common), batch_size=500,
                       shuffle=False)
    base = load_pretrained(plan.architecture)
    for param in base.parameters():
        param.requires_grad_(False)
    base_acc = float(evaluate(base, test, device="cpu"))
    rows = []
    for lr in (float(x) for x in args.lrs.split(",")):
        student = apply_plan(copy.deepcopy(base), plan, seed=0)
        seconds = kd_finetune(student, base, train, steps=args.steps, batch_size=args.batch_size, lr=lr)
        acc = float(evaluate(student, test, device="cpu"))
        rows.append({"lr": lr, "test_acc": acc, "drop": base_acc - acc, "finetune_s": seconds})
        log(f"lr {lr}: test {acc:.2f}% (original {base_acc:.2f}%)")
    payload = {**envelope("final-lr", quick=False, shared_cpu=args.shared_cpu, argv=argv,
                           script="benchmarks/bench_final_lr.py"), "plan": str(args.plan),
               "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio, "steps": args.steps,
               "batch_size": args.batch_size, "test_images": len(test.dataset), "base_test_acc": base_acc,
               "rows": rows}
    write_json(args.out / f"{stem}.json", payload)
    lines = [
        "# Final fine-tune learning rate (`benchmarks/bench_final_lr.py`)", "",
        f"Command: `{payload['command']}`; "
        f"{payload['machine']['date_utc']}; plan `{args.plan.name}` (params x{plan.params_ratio:.2f}, MACs "
        f"x{plan.macs_ratio:.2f}); {args.steps} SGD steps of batch {args.batch_size}, cosine, KD alpha 0.9 from "
        f"the original; test set {len(test.dataset)} images, original {base_acc:.2f}%. Machine: "
        f"{payload['machine']['nproc']} CPU ({payload['machine']['cpu_model']}), {args.threads} torch thread(s)"
        + ("; **the CPU was shared with other jobs** (fine-tune seconds are pessimistic)."
           if args.shared_cpu else "."), "",
        "| lr | test % after fine-tune | drop (pts) | fine-tune s |", "|---|---|---|---|",
        *(f"| {r['lr']} | {r['test_acc']:.2f} | {r['drop']:.2f} | {r['finetune_s']:.0f} |" for r in rows),
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
