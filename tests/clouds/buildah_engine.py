"""A stand-in for Docker/Podman that the boot script's container lines call as "$engine":
it runs what they ask with Buildah (chroot isolation, no daemon), which is what this
machine can run. Standard library only; started as `python3 buildah_engine.py <args>`.

BUILDAH_ENGINE_ARGS: a JSON list, the `buildah --root ... --runroot ...` prefix.
BUILDAH_ENGINE_LOG: a file that gets each call's arguments as one JSON line.

`run` accepts exactly the options the boot script's command line uses; any other fails,
so a new option there needs its translation here. The ones Buildah has no counterpart
for (--init, --pull never, the GPUs) are recorded for the test; chroot isolation already
shares the host's network and IPC. The container runs in the foreground, as under the
node's unit, and its exit code is the command's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

WITH_VALUE = {
    "--name",
    "--network",
    "--ipc",
    "--user",
    "--volume",
    "--workdir",
    "--env",
    "--pull",
    "--entrypoint",
    "--gpus",
    "--device",
}
FLAGS = {"--init"}


def buildah(*args: str) -> subprocess.CompletedProcess[bytes]:
    prefix = json.loads(os.environ["BUILDAH_ENGINE_ARGS"])
    return subprocess.run([*prefix, *args], check=False)


def run(args: list[str]) -> int:
    options: list[tuple[str, str]] = []
    while args and args[0].startswith("--"):
        name = args.pop(0)
        if name in FLAGS:
            options.append((name, ""))
        elif name in WITH_VALUE:
            options.append((name, args.pop(0)))
        else:
            print(f"buildah_engine: no translation for {name}", file=sys.stderr)
            return 125
    image, command = args[0], args[1:]
    given = dict(options)
    if given.get("--pull") != "never":
        print("buildah_engine: run must not pull (the script pulls first)", file=sys.stderr)
        return 125
    translated = ["--isolation", "chroot"]
    for name, value in options:
        if name == "--env":
            if "=" not in value:  # a name only: the value from this environment
                if value not in os.environ:
                    continue
                value = f"{value}={os.environ[value]}"
            translated += ["--env", value]
        elif name == "--volume":
            translated += ["--volume", value]
        elif name == "--user":
            translated += ["--user", value]
        elif name == "--workdir":
            translated += ["--workingdir", value]
    if "--entrypoint" in given:
        command = [given["--entrypoint"], *command]
    name = given.get("--name", "engine-run")
    made = buildah("from", "--pull-never", "--name", name, image)
    if made.returncode != 0:
        return made.returncode
    try:
        return buildah("run", *translated, name, "--", *command).returncode
    finally:
        buildah("rm", name)


def main(argv: list[str]) -> int:
    with open(os.environ["BUILDAH_ENGINE_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    verb, args = argv[0], argv[1:]
    if verb == "pull":
        return buildah("pull", "--tls-verify=false", "--quiet", *args).returncode
    if verb == "rm":
        buildah("rm", *[a for a in args if not a.startswith("--")])
        return 0
    if verb == "run":
        return run(args)
    print(f"buildah_engine: no translation for {verb}", file=sys.stderr)
    return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
