"""Make a flow-fused video model (``flow-srresnet``, vsr.models.flowfuse) from a trained SRResNet weights file:
the same tensors, plus the fusion's settings in the file's metadata. Nothing is trained.

    python scripts/make_flow_model.py --weights srresnet-mse -o weights/srresnet-flow.pt --name srresnet-flow
"""
from __future__ import annotations

import argparse

from vsr import weights
from vsr.models.flowfuse import DIS_PRESETS, from_srresnet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="srresnet-mse", help="an SRResNet weights name or file")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--name", required=True, help="the model's name in its metadata")
    ap.add_argument("--alpha", type=float, default=weights.FLOW_PARAMS["alpha"])
    ap.add_argument("--sigma", type=float, default=weights.FLOW_PARAMS["sigma"])
    ap.add_argument("--preset", choices=DIS_PRESETS, default=weights.FLOW_PARAMS["preset"])
    args = ap.parse_args()
    src = weights.load(args.weights)
    if src.descriptor.arch != "srresnet":
        raise SystemExit(f"{src.path}: a {src.descriptor.arch}, not an srresnet")
    model = from_srresnet(src.model, alpha=args.alpha, sigma=args.sigma, preset=args.preset)
    meta = {k: v for k, v in src.meta.items() if k not in ("arch", "arch_kwargs", "name")}
    meta |= {"name": args.name, "made_from": src.meta.get("name", str(src.path))}
    print(weights.save(model, args.out, meta=meta))


if __name__ == "__main__":
    main()
