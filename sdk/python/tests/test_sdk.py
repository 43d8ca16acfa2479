"""The SDK natively, against the in-memory host: python3 -m unittest discover -s tests (in sdk/python)."""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import platform_gateway_sdk as pg  # noqa: E402
from platform_gateway_sdk import state  # noqa: E402
from platform_gateway_sdk.testing import Host  # noqa: E402


class Hello(pg.Provider):
    def discover(self):
        return [pg.Cluster("c1", [pg.Node("n1", "http://10.0.0.1:37000", node_group="data")])]


class Broken(pg.Provider):
    def discover(self):
        return {}["missing"]

    def provision(self, request):
        raise pg.Unavailable("no capacity", retry_after=30)

    def deprovision(self, request):
        return None


class BadAnswers(pg.Provider):
    def discover(self):
        return [pg.Cluster("c1", [pg.Node("n1", 42)])]

    def provision(self, request):
        return pg.ProvisionResponse(node_ids=["a", 7])


class ExportTest(unittest.TestCase):
    def test_export_defines_provider_in_the_calling_module(self):
        adapter = pg.export(Hello)
        self.assertIs(globals()["Provider"], adapter)
        self.assertEqual(adapter.__name__, "Provider")
        self.assertIs(adapter.implementation, Hello)

    def test_answers_are_checked_and_converted(self):
        Adapter = pg.export(Hello)
        with Host():
            clusters = Adapter().discover()
        self.assertEqual(clusters[0].nodes[0].node_group, "data")
        self.assertIsNone(clusters[0].nodes[0].node_class)

    def test_a_request_built_without_an_id_is_a_new_request_each_time(self):
        first, second = pg.ProvisionRequest(cluster_id="c1"), pg.ProvisionRequest(cluster_id="c1")
        self.assertTrue(first.request_id)
        self.assertNotEqual(first.request_id, second.request_id)
        self.assertEqual(pg.ProvisionRequest(request_id="r1").request_id, "r1")

    def test_the_defaults_are_unsupported(self):
        Adapter = pg.export(Hello)
        with Host():
            with self.assertRaises(pg.Unsupported):
                Adapter().provision(pg.ProvisionRequest(cluster_id="c1"))
            with self.assertRaises(pg.Unsupported):
                Adapter().deprovision(pg.DeprovisionRequest(cluster_id="c1", node_id="n1"))

    def test_an_unexpected_exception_is_internal_with_its_traceback_logged(self):
        Adapter = pg.export(Broken)
        with Host() as host:
            with self.assertRaises(pg.Internal) as raised:
                Adapter().discover()
            self.assertEqual(str(raised.exception), "discover failed: KeyError: 'missing'")
            level, message = host.logs[-1]
            self.assertEqual(level, "error")
            self.assertIn("Traceback (most recent call last)", message)
            self.assertIn("in discover", message)

    def test_provider_errors_go_through_with_their_details(self):
        Adapter = pg.export(Broken)
        with Host():
            with self.assertRaises(pg.Unavailable) as raised:
                Adapter().provision(pg.ProvisionRequest(cluster_id="c1"))
        self.assertEqual(raised.exception.retry_after, 30)
        self.assertEqual(raised.exception.message, "no capacity")

    def test_answers_of_the_wrong_type_are_internal_not_traps(self):
        Adapter = pg.export(BadAnswers)
        with Host():
            with self.assertRaisesRegex(pg.Internal, "Node.agent_address must be a str"):
                Adapter().discover()
            with self.assertRaisesRegex(pg.Internal, "node_ids must be a str"):
                Adapter().provision(pg.ProvisionRequest(cluster_id="c1"))

    def test_in_the_component_a_provider_is_created_only_by_the_adapter(self):
        from platform_gateway_sdk import _host

        Adapter = pg.export(Hello)
        _host.IN_COMPONENT = True
        try:
            # What componentize-py does at build time when the app module forgot `export`.
            with self.assertRaisesRegex(TypeError, r"call `export\(YourProvider\)`"):
                Hello()
            with Host():
                self.assertEqual(Adapter().discover()[0].cluster_id, "c1")
        finally:
            _host.IN_COMPONENT = False

    def test_the_response_count_defaults_to_the_ids(self):
        self.assertEqual(pg.ProvisionResponse(node_ids=["a", "b"]).count, 2)
        self.assertEqual(pg.ProvisionResponse(count=3).node_ids, None)
        with self.assertRaises(ValueError):
            pg.ProvisionResponse()

    def test_retry_after_is_whole_seconds_within_u32(self):
        self.assertEqual(pg.Unavailable("x", 2.7).retry_after, 2)
        self.assertEqual(pg.Unavailable("x", -1).retry_after, 0)
        self.assertEqual(pg.Unavailable("x", 2**40).retry_after, 2**32 - 1)
        self.assertIsNone(pg.Unavailable("x").retry_after)


class SettingsAndLogTest(unittest.TestCase):
    def test_settings_are_a_dict(self):
        with Host(settings={"region": "eu", "n": [1, 2]}):
            self.assertEqual(pg.settings(), {"region": "eu", "n": [1, 2]})
        with Host():
            self.assertEqual(pg.settings(), {})

    def test_log_levels(self):
        with Host() as host:
            pg.log.trace("t")
            pg.log.debug("d")
            pg.log.info("i")
            pg.log.warn("w")
            pg.log.warning("w2")
            pg.log.error(ValueError("e"))
        self.assertEqual(
            host.logs,
            [("trace", "t"), ("debug", "d"), ("info", "i"), ("warn", "w"), ("warn", "w2"), ("error", "e")],
        )

    def test_without_a_host_a_call_says_how_to_get_one(self):
        with self.assertRaisesRegex(RuntimeError, "platform_gateway_sdk.testing.Host"):
            pg.settings()


class StateTest(unittest.TestCase):
    def test_get_set_delete(self):
        with Host() as host:
            self.assertIsNone(state.get("k"))
            state.set("k", "v")
            self.assertEqual(state.get("k"), b"v")
            state.set("k", b"\x00\x01")
            self.assertEqual(host.state["k"], b"\x00\x01")
            state.delete("k")
            state.delete("k")
            self.assertIsNone(state.get("k"))

    def test_compare_and_swap(self):
        with Host():
            self.assertTrue(state.compare_and_swap("k", None, b"1"))
            self.assertFalse(state.compare_and_swap("k", None, b"2"))
            self.assertFalse(state.compare_and_swap("k", b"0", b"2"))
            self.assertTrue(state.compare_and_swap("k", "1", "2"))
            self.assertTrue(state.compare_and_swap("k", b"2", None))
            self.assertIsNone(state.get("k"))

    def test_before_state_call_can_make_a_compare_and_swap_lose_a_race(self):
        with Host() as host:
            seen = []

            def competitor(operation, key):
                seen.append((operation, key))
                if operation == "compare-and-swap":
                    host.before_state_call = None
                    host.state[key] = b"theirs"

            host.before_state_call = competitor
            self.assertIsNone(state.get("k"))
            self.assertFalse(state.compare_and_swap("k", None, b"mine"))
            self.assertEqual(host.state["k"], b"theirs")
            self.assertEqual(seen, [("get", "k"), ("compare-and-swap", "k")])

    def test_list_keys_reads_every_page(self):
        with Host() as host:
            host.page_size = 3
            for i in range(10):
                state.set(f"a/{i:02}", b"")
            state.set("b/1", b"")
            self.assertEqual(list(state.list_keys("a/")), [f"a/{i:02}" for i in range(10)])
            self.assertEqual(list(state.list_keys("a/", start_after="a/07")), ["a/08", "a/09"])
            self.assertEqual(len(list(state.list_keys())), 11)

    def test_json(self):
        with Host():
            state.set_json("j", {"b": 1, "a": [True, None]})
            self.assertEqual(state.get_json("j"), {"a": [True, None], "b": 1})
            self.assertTrue(state.compare_and_swap_json("j", {"a": [True, None], "b": 1}, {"c": 2}))
            self.assertIsNone(state.get_json("missing"))

    def test_update_retries_until_its_swap_wins(self):
        with Host() as host:
            state.set_json("n", 0)
            threads = [
                threading.Thread(target=lambda: [state.update_json("n", lambda n: n + 1, attempts=1000) for _ in range(50)])
                for _ in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(state.get_json("n"), 400)
            self.assertIsNone(state.update_json("n", lambda n: None))
            self.assertNotIn("n", host.state)

    def test_update_gives_up_as_unavailable(self):
        with Host() as host:
            real = host.state_cas
            host.state_cas = lambda *a: False
            with self.assertRaises(pg.Unavailable) as raised:
                state.update("k", lambda v: b"x", attempts=3)
            host.state_cas = real
        self.assertEqual(raised.exception.retry_after, 1)

    def test_an_exception_of_the_function_goes_through(self):
        with Host():
            with self.assertRaises(pg.NotFound):
                state.update("k", lambda v: (_ for _ in ()).throw(pg.NotFound("gone")))

    def test_store_errors(self):
        with Host() as host:
            host.unavailable = "the store is down"
            with self.assertRaisesRegex(pg.Unavailable, "state get `k`: the store is down"):
                state.get("k")
            host.unavailable = None
            with self.assertRaises(pg.Internal):
                state.set("k", b"x" * (1024 * 1024 + 1))
            with self.assertRaises(TypeError):
                state.set("k", 1)


if __name__ == "__main__":
    unittest.main()
