"""A ``ray.serve.llm`` start-up callback that skips the model "download" for a local folder.

Before an LLM replica starts its engine, ``ray.serve.llm`` runs one Ray task on every node of
the replica's placement group to download the model files there. The task runs in a fresh
worker process with the replica's runtime environment, so it imports vLLM first: on a 2-core
machine that is 20-25 s spent "downloading" a folder that is already on the disk.

``LLMConfig(callback_config={"callback_class": LOCAL_MODEL_CALLBACK})`` installs
:class:`LocalModelCallback`, which turns that step off when there is nothing to fetch: the
model source is a folder with a ``config.json`` on the replica's node, and every bundle of the
placement group is on that same node. A hub id, a cloud mirror, or a placement group that
spans nodes keeps the normal download.

The class is imported by name inside the replica, so the cluster must be able to import
``helpers`` (it can on a cluster started from this project's environment).

Used by :func:`helpers.llm.make_llm_config`; mentioned in notebooks/04a_llm_config_and_openai_api.ipynb.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ray.llm._internal.common.callbacks.base import CallbackBase

__all__ = ["LOCAL_MODEL_CALLBACK", "LocalModelCallback", "is_local_model_folder"]

LOCAL_MODEL_CALLBACK = "helpers.llm_callbacks.LocalModelCallback"

logger = logging.getLogger("ray.serve")


def is_local_model_folder(source: str) -> bool:
    """True when ``source`` is a folder holding a Hugging Face model (its ``config.json``)."""
    return bool(source) and Path(source, "config.json").is_file()


class LocalModelCallback(CallbackBase):
    """Skip the per-node download task when the model is a folder already on this node."""

    async def on_before_node_init(self) -> None:
        import ray

        source = self.llm_config.model_loading_config.model_source
        if not isinstance(source, str) or not is_local_model_folder(source):
            return
        table = ray.util.placement_group_table(self.ctx.placement_group)
        nodes = set(table.get("bundles_to_node_id", {}).values())
        here = ray.get_runtime_context().get_node_id()
        if nodes and nodes != {here}:
            return  # other nodes of the group need the files too: keep the download
        self.ctx.run_init_node = False
        logger.info("Model folder %s is on this node: skipping the per-node download task", source)
