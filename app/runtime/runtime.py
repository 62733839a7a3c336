"""PluginRuntime: every plugin of the server, from discovery to shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from app.runtime.errors import PluginFault
from app.runtime.loader import BrokenPlugin, discover
from app.runtime.manifest import Manifest, ManifestError, read_manifest
from app.runtime.options_schema import OptionsSchema
from app.runtime.registry import PluginRegistry, UnknownPlugin
from app.runtime.supervisor import PluginSupervisor


class PluginRuntime:
    def __init__(self, plugin_dirs: Iterable[Path], gpu_policy: str = "auto", log_level: str = "INFO") -> None:
        self.registry = PluginRegistry()
        self._plugin_dirs = list(plugin_dirs)
        self._gpu_policy = gpu_policy
        self._log_level = log_level
        self._supervisors: dict[str, PluginSupervisor] = {}
        self._broken: dict[str, BrokenPlugin] = {}

    def start(self) -> None:
        """Register every plugin (LOADED) and start loading them in the background."""
        for plugin in discover(self._plugin_dirs):
            if isinstance(plugin, BrokenPlugin):
                self.registry.register(plugin.name)
                self._mark_broken(plugin)
                continue
            self.registry.register(
                plugin.name,
                description=plugin.description,
                version=plugin.version,
                requires_gpu=plugin.requires_gpu,
            )
            self._supervise(plugin)

    def _supervise(self, manifest: Manifest) -> None:
        supervisor = PluginSupervisor(manifest, self.registry, self._gpu_policy, self._log_level)
        self._supervisors[manifest.name] = supervisor
        supervisor.start()

    def _mark_broken(self, plugin: BrokenPlugin) -> None:
        self._broken[plugin.name] = plugin
        fix = f"fix {plugin.folder / 'manifest.json'}, then restart with POST /v1/plugins/{plugin.name}/restart"
        fault = PluginFault("ValueError", f"invalid manifest: {plugin.error}", fix)
        self.registry.mark_failed(plugin.name, fault.reason)

    def restart(self, name: str) -> bool:
        """Manual restart in any state (a healthy plugin is reloaded); False while one is already under way."""
        supervisor = self.supervisor(name)
        if supervisor is not None:
            return supervisor.restart()
        # An invalid manifest: read it again, it may have been fixed.
        broken = self._broken.pop(name)
        self.registry.mark_loaded(name)
        try:
            manifest = read_manifest(broken.folder)
        except ManifestError as exc:
            self._mark_broken(BrokenPlugin(name, broken.folder, exc))
            return True
        if manifest.name != name:
            error = ManifestError(f"'name' is now {manifest.name!r}; restart the server to rename a plugin")
            self._mark_broken(BrokenPlugin(name, broken.folder, error))
            return True
        self._supervise(manifest)
        return True

    def supervisor(self, name: str) -> PluginSupervisor | None:
        """The supervisor of a plugin that has a valid manifest; None for a broken one."""
        if name not in self.registry:
            raise UnknownPlugin(name)
        return self._supervisors.get(name)

    def options_schema(self, name: str) -> OptionsSchema:
        """The client options `name` accepts (a plugin with an invalid manifest declares none)."""
        supervisor = self.supervisor(name)
        return supervisor.options_schema if supervisor is not None else OptionsSchema(name, None)

    async def wait_settled(self, timeout_s: float) -> None:
        """Wait until no plugin is LOADED (for scripts and tests); TimeoutError past timeout_s."""
        subscription = self.registry.subscribe()
        try:
            async with asyncio.timeout(timeout_s):
                while any(h["state"] == "LOADED" for h in self.registry.list()):
                    await subscription.get()
        finally:
            self.registry.unsubscribe(subscription)

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._supervisors.values()))
        self.registry.close()
