"""Orbax checkpoints of the train state: periodic, on SIGTERM / SIGINT, keep-last-N, atomic.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash
while writing leaves the previous checkpoints intact (an unfinished one is never listed). A
checkpoint restores onto any mesh: the caller passes the shardings the state should have now.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import jax

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves and restores {"step", "params", "opt_state"} trees under `directory`."""

    def __init__(self, directory: str | Path, keep: int = 3, every: int = 0):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        self.every = every
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def save(self, step: int, state: dict) -> None:
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()
        log.info("saved checkpoint %d in %s", step, self.directory)

    def restore(self, step: int, like: dict, shardings: dict) -> dict:
        """The state saved at `step`, laid out like `like` and placed with `shardings`."""
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like, shardings
        )
        try:
            restored = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"Checkpoint {step} in {self.directory} does not fit this run's model or "
                f"optimiser ({error}). Use a fresh --workdir, or the config it was written with."
            ) from None
        # Orbax gives plain tuples back for optimiser states; restore the original node types.
        return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(restored))

    def close(self) -> None:
        self.manager.close()


def read_checkpoint(directory: str | Path, step: int | None = None) -> dict:
    """A saved state as host numpy arrays, whatever mesh or number of processes wrote it
    (for evaluation, export and tests). `step` defaults to the latest."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()  # orbax rejects relative paths
    if step is None:
        steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        if not steps:
            raise FileNotFoundError(f"No checkpoints in {directory} (train writes them there).")
        step = steps[-1]
    path = directory / str(step) / "default"
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint for step {step} in {directory}.")
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    return jax.device_get(checkpointer.restore(path, abstract))


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step (then it saves and
    exits), instead of dying mid-step. A second signal of the same kind stops at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal == signum:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signal is not None
