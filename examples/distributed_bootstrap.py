"""A parametric bootstrap spread over several processes with jax.distributed.

Each process fits a contiguous share of the replicates on its own devices; parametricbootstrap
gathers the shares, so every process holds the whole table, and process 0 saves it.

On a Slurm cluster (jax.distributed.initialize() reads the job's environment):

    srun --nodes=2 --ntasks-per-node=1 python examples/distributed_bootstrap.py --out boot.parquet

On one machine, two CPU processes and a loopback coordinator (what tests/test_scaleout.py runs):

    python examples/distributed_bootstrap.py --coordinator 127.0.0.1:12355 --processes 2 --process-id 0 \
        --out boot.parquet &
    python examples/distributed_bootstrap.py --coordinator 127.0.0.1:12355 --processes 2 --process-id 1 \
        --out boot.parquet

The result equals a single-process run of the same seed, replicate for replicate.
"""

import argparse

import jax


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coordinator", help="host:port of process 0 (default: from the cluster's environment)")
    ap.add_argument("--processes", type=int, help="number of processes")
    ap.add_argument("--process-id", type=int, help="this process's index")
    ap.add_argument("--dataset", default="sleepstudy")
    ap.add_argument("--formula", default="reaction ~ 1 + days + (1 + days | subj)")
    ap.add_argument("-n", type=int, default=10_000, help="replicates")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True, help="Parquet file for the replicates (written by process 0)")
    args = ap.parse_args()

    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.processes, process_id=args.process_id
    )
    import jaxmm  # after initialize: jaxmm must not touch the devices before it

    m = jaxmm.fit(args.formula, jaxmm.dataset(args.dataset))
    samp = jaxmm.parametricbootstrap(args.seed, args.n, m)
    if jax.process_index() == 0:
        samp.save(args.out)
        print(samp)


if __name__ == "__main__":
    main()
