"""Two Linux network namespaces joined by a veth pair, whose link a test can cut.

Each namespace holds one end of the pair, with its own address in
10.213.0.0/16 (inside the namespaces only: nothing outside them is reached)
and its loopback. `cut` installs the `blackhole` qdisc on both ends: packets
are silently dropped, no connection is reset, as in a network partition or a
machine that vanished. `heal` removes it. Needs root (CI and the dev machines
run tests as root).
"""

import os
import subprocess


def _run(*command):
    subprocess.run(command, check=True, capture_output=True, text=True)


class NamespacePair:
    """Namespaces `<tag>0` and `<tag>1`, addresses 10.213.<n>.1 and .2.

    Args:
        tag: unique per test (e.g. with the process id); at most 9 characters.
    """

    def __init__(self, tag):
        self.namespaces = [f"{tag}n0", f"{tag}n1"]
        self.devices = [f"{tag}v0", f"{tag}v1"]
        subnet = os.getpid() % 250 + 1
        self.addresses = [f"10.213.{subnet}.1", f"10.213.{subnet}.2"]

    def create(self):
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", self.devices[0], "type", "veth", "peer", "name",
             self.devices[1])
        for namespace, device, address in zip(self.namespaces, self.devices, self.addresses):
            _run("ip", "link", "set", device, "netns", namespace)
            self.exec_in(namespace, "ip", "addr", "add", f"{address}/24", "dev", device)
            self.exec_in(namespace, "ip", "link", "set", device, "up")
            self.exec_in(namespace, "ip", "link", "set", "lo", "up")

    def exec_in(self, namespace, *command):
        _run("ip", "netns", "exec", namespace, *command)

    def prefix(self, index):
        """Command prefix that runs a program inside namespace `index`."""
        return ["ip", "netns", "exec", self.namespaces[index]]

    def cut(self):
        for namespace, device in zip(self.namespaces, self.devices):
            self.exec_in(namespace, "tc", "qdisc", "replace", "dev", device, "root", "blackhole")

    def heal(self):
        for namespace, device in zip(self.namespaces, self.devices):
            self.exec_in(namespace, "tc", "qdisc", "del", "dev", device, "root")

    def destroy(self):
        """Removes both namespaces (and with them the veth pair); never raises."""
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
