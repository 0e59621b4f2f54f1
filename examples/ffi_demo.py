"""A tour of the universal call API: every call below runs in a worker process."""

import asyncio

import snakebridge


def main() -> None:
    print("math.sqrt(16) =", snakebridge.call("math", "sqrt", [16]))
    print("math.pi =", snakebridge.get("math", "pi"))
    print("json.dumps =", snakebridge.call("json", "dumps", [{"a": [1, 2]}], {"sort_keys": True}))

    with snakebridge.session():
        path = snakebridge.call("pathlib", "Path", ["/tmp"])  # a Ref: the Path lives in a worker
        print("Path('/tmp'):", repr(path), "exists:", path.exists(), "name:", path.name)
        print("path / 'x' =", path / "x")

    try:
        snakebridge.call("json", "loads", ["{not json"])
    except ValueError as exc:  # a remote JSONDecodeError is still a ValueError
        print("remote error:", exc)

    print("factorial(20) via asyncio =", asyncio.run(snakebridge.acall("math", "factorial", [20])))
    for pool in snakebridge.status():
        pids = [worker["pid"] for worker in pool["workers"]]
        print(f"pool {pool['name']!r}: {pool['size']} workers {pids}")


if __name__ == "__main__":
    main()
