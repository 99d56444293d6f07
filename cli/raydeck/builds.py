"""`raydeck images build -f image.yaml [--wait]`: build an image from a spec in a
cloud's data plane, printing each step as it starts (on stderr) and the build (on
stdout). image.yaml:

    name: ml                  # the image it makes (or its next revision)
    cloud: local              # id, name, or kind when there is one of it
    base: ray
    requirements: [humanize]
    post_build: ["python -c 'import humanize'"]
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .image_builds import BuildFailed

if TYPE_CHECKING:
    from .cli import Context

TOP_LEVEL = ("name", "cloud")
EXIT_BUILD_FAILED = 1


def cmd_images_build(ctx: Context) -> int:
    from .cli import UsageError, cloud_id, load_yaml

    data = load_yaml(ctx.args.file)
    if ctx.args.name is not None:
        data["name"] = ctx.args.name
    missing = [f for f in TOP_LEVEL if not data.get(f)]
    if missing:
        raise UsageError(f"{ctx.args.file} needs {' and '.join(missing)}.")
    body: dict[str, Any] = {
        "name": data.pop("name"),
        "cloud": cloud_id(ctx, data.pop("cloud")),
        "spec": data,
    }
    build = ctx.client.build_image(body, idempotency_key=ctx.args.idempotency_key)
    ctx.note(f"Build {build.id} of {build.name}: {build.state}.")
    if ctx.args.wait and not build.is_final:
        try:
            build = ctx.client.wait_for_build(
                build.id, timeout=ctx.args.timeout, on_step=lambda b: ctx.note(f"==> {b.step}")
            )
        except BuildFailed as exc:
            failed = exc.build
            ctx.note(f"Build {failed.id} {failed.state} at {failed.step or 'its start'}:")
            for line in failed.log_tail.splitlines()[-20:]:
                ctx.note(f"  {line}")
            ctx.note(f"error: {exc.message}")
            ctx.show(failed)
            return EXIT_BUILD_FAILED
    if build.reused_from:
        ctx.note(f"The same spec was built before (build {build.reused_from}): reused.")
    ctx.show(build)
    return 0


def add_commands(images: Any, leaf: Any) -> None:
    """`images build`, under the `images` group of cli.py."""
    p: argparse.ArgumentParser = leaf(
        images, "build", cmd_images_build, "build an image from a spec (image.yaml)"
    )
    p.add_argument("-f", "--file", required=True, help="YAML file (`-` for stdin)")
    p.add_argument("--name", help="overrides `name:` in the file")
    p.add_argument("--wait", action="store_true", help="follow the build, printing each step")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait (1800)")
    p.add_argument("--idempotency-key", help="resend a build safely (default: a new key)")
