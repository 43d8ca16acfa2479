"""The provider's logic natively, against the SDK's in-memory host: python3 -m unittest (here).

The same code runs in the gateway; `platform-gateway test-plugin` checks the built component.
"""

import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../sdk/python"))

from platform_gateway_sdk import (  # noqa: E402
    DeprovisionRequest,
    Internal,
    InvalidRequest,
    NotFound,
    ProvisionRequest,
    Unavailable,
)
from platform_gateway_sdk.testing import Host  # noqa: E402

import app  # noqa: E402

Provider = app.Provider


def inventory(small=3, large=1):
    machines = [
        {"id": f"s{i}", "agent_address": f"http://10.0.0.{i}:37000", "node_class": "small"}
        for i in range(1, small + 1)
    ] + [
        {"id": f"l{i}", "agent_address": f"http://10.0.1.{i}:37000", "node_class": "large"}
        for i in range(1, large + 1)
    ]
    return Host(settings={"machines": machines})


def request(cluster="c1", count=1, node_class="small", request_id="r-1"):
    return ProvisionRequest(
        request_id=request_id,
        cluster_id=cluster,
        store="mongodb",
        store_version="4.0",
        node_group="data",
        node_class=node_class,
        desired_count=3,
        count=count,
    )


class InventoryTest(unittest.TestCase):
    def test_provisioned_machines_are_discovered_until_deprovisioned(self):
        with inventory() as host:
            answer = Provider().provision(request(count=2))
            self.assertEqual((answer.count, answer.node_ids), (2, ["s1", "s2"]))
            [cluster] = Provider().discover()
            self.assertEqual(cluster.cluster_id, "c1")
            self.assertEqual(
                [(n.node_id, n.agent_address, n.node_class, n.node_group) for n in cluster.nodes],
                [("s1", "http://10.0.0.1:37000", "small", "data"), ("s2", "http://10.0.0.2:37000", "small", "data")],
            )
            with self.assertRaises(NotFound):
                Provider().deprovision(DeprovisionRequest(cluster_id="other", node_id="s1"))
            for node in answer.node_ids:
                Provider().deprovision(DeprovisionRequest(cluster_id="c1", node_id=node))
            self.assertEqual(Provider().discover(), [])
            with self.assertRaises(NotFound):
                Provider().deprovision(DeprovisionRequest(cluster_id="c1", node_id="s1"))
        self.assertIn(("info", "allocated s1, s2 to cluster `c1` group `data`"), host.logs)

    def test_fewer_free_is_fine_and_none_free_is_unavailable(self):
        with inventory(small=2) as host:
            self.assertEqual(Provider().provision(request(count=5)).node_ids, ["s1", "s2"])
            self.assertEqual(host.logs[0][0], "warn")
            with self.assertRaisesRegex(Unavailable, "all 2 are allocated"):
                Provider().provision(request(cluster="c2", request_id="r-2"))

    def test_an_unknown_class_is_an_invalid_request(self):
        with inventory():
            with self.assertRaisesRegex(InvalidRequest, "no machine of node class `huge`"):
                Provider().provision(request(node_class="huge"))

    def test_a_retried_request_gets_the_same_machines(self):
        with inventory():
            first = Provider().provision(request(count=2, request_id="same"))
            again = Provider().provision(request(count=2, request_id="same"))
            self.assertEqual(first.node_ids, again.node_ids)
            other = Provider().provision(request(count=1, request_id="new"))
            self.assertEqual(other.node_ids, ["s3"])

    def test_a_machine_taken_between_the_read_and_the_swap_is_not_handed_out_twice(self):
        # Another provision takes s1 just before this one's compare-and-swap on it: the race,
        # made to happen every time rather than left to thread scheduling.
        theirs = json.dumps(
            {"cluster_id": "other", "node_group": "data", "node_class": "small",
             "agent_address": "x", "request_id": "x"}
        ).encode()

        class Competing(Host):
            def state_cas(self, key, expected, new):
                if key == "machine/s1" and key not in self.state:
                    self.state[key] = theirs
                return super().state_cas(key, expected, new)

        with Competing(settings=inventory().settings) as host:
            answer = Provider().provision(request())
            self.assertEqual(answer.node_ids, ["s2"])
            self.assertEqual(host.state["machine/s1"], theirs)

    def test_concurrent_provisions_never_hand_out_one_machine_twice(self):
        with inventory(small=5):
            results = []

            def provision(i):
                try:
                    results.append(Provider().provision(request(cluster=f"c{i}", request_id=f"r{i}")).node_ids)
                except Unavailable:
                    results.append("refused")

            threads = [threading.Thread(target=provision, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            handed_out = [n for r in results if r != "refused" for n in r]
            self.assertEqual(sorted(handed_out), ["s1", "s2", "s3", "s4", "s5"])
            self.assertEqual(results.count("refused"), 3)

    def test_a_malformed_machine_is_an_internal_error_naming_the_field(self):
        with Host(settings={"machines": [{"id": "m1", "node_class": "small"}]}):
            with self.assertRaisesRegex(Internal, "TypeError: .*agent_address"):
                Provider().provision(request())


if __name__ == "__main__":
    unittest.main()
