"""The XML-RPC facade: only the public verbs, explicit argument checks, domain errors as Faults.

Fault codes (docs/PROTOCOL.md): 1 unknown verb, 2 bad arguments, 3 stale lease, 4 unknown task,
5 queue full, 6 internal error, 7 unknown worker (register again).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xmlrpc.client import Binary, Fault
from xmlrpc.server import SimpleXMLRPCDispatcher

from common.errors import BadRequest, FramehiveError, QueueFull, StaleLease, UnknownTask, UnknownWorker
from common.tasks import Lease, lease_to_wire, outcome_from_wire, spec_from_wire
from master.core.service import MasterService

log = logging.getLogger(__name__)

FAULT_UNKNOWN_VERB = 1
FAULT_BAD_ARGS = 2
FAULT_STALE_LEASE = 3
FAULT_UNKNOWN_TASK = 4
FAULT_QUEUE_FULL = 5
FAULT_INTERNAL = 6
FAULT_UNKNOWN_WORKER = 7

_FAULTS: list[tuple[type[Exception], int]] = [
    (StaleLease, FAULT_STALE_LEASE), (UnknownTask, FAULT_UNKNOWN_TASK), (QueueFull, FAULT_QUEUE_FULL),
    (UnknownWorker, FAULT_UNKNOWN_WORKER), (BadRequest, FAULT_BAD_ARGS), (FramehiveError, FAULT_BAD_ARGS),
]
MAX_BATCH_ITEMS = 1024


def results_page(page: dict[str, Any]) -> dict[str, Any]:
    """A page of results (MasterService.results) as it goes on the wire: each result as its dict."""
    return {**page, "results": [r.to_wire() for r in page["results"]]}


def lease_with_payload(lease: Lease) -> dict[str, Any]:
    """A lease as an XML-RPC struct, its payload as Binary."""
    return {**lease_to_wire(lease), "payload": Binary(lease.task.payload)}


def _payload(d: Any) -> bytes:
    p = d.get("payload") if isinstance(d, dict) else None
    if isinstance(p, Binary):
        return p.data
    if isinstance(p, bytes):
        return p
    raise BadRequest("task 'payload' must be base64 binary (xmlrpc Binary)")


def _items(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{what} must be an array, got {type(value).__name__}")
    if len(value) > MAX_BATCH_ITEMS:
        raise BadRequest(f"{what} holds {len(value)} items (max {MAX_BATCH_ITEMS})")
    return value


def _text(value: Any, what: str, max_chars: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise BadRequest(f"{what} must be a non-empty string of at most {max_chars} characters")
    return value


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadRequest(f"{what} must be an integer in {lo}..{hi}, got {value!r:.40}")
    return value


class MasterRpc:
    """The verbs reachable over XML-RPC. Every public method here is a verb; nothing else is."""

    def __init__(self, service: MasterService) -> None:
        self._svc = service

    def add_task(self, task: dict) -> str:
        """Queue one task {port, seq, pipeline, captured_ns, payload: Binary, ...}; return its id."""
        [task_id] = self.add_tasks([task])
        return task_id

    def add_tasks(self, tasks: list) -> list:
        """Queue tasks; return their ids in order ('' where a task was refused for capacity)."""
        items = [(spec_from_wire(t), _payload(t)) for t in _items(tasks, "tasks")]
        return self._svc.add_tasks(items)

    def register_worker(self, name: str) -> dict:
        """Register a worker by name; returns {worker_id, lease_s, heartbeat_s}."""
        return self._svc.register_worker(_text(name, "name"))

    def heartbeat(self, worker_id: str, stats: dict, held: list | None = None) -> dict:
        """Report liveness and stats, optionally with the task ids in hand: renews those leases (all of
        the worker's when `held` is left out) and requeues the others. {known: false}: register again."""
        if not isinstance(stats, dict):
            raise BadRequest("stats must be a struct")
        if held is not None:
            held = [_text(x, "held task id") for x in _items(held, "held")]
        return self._svc.heartbeat(_text(worker_id, "worker_id"), stats, held)

    def request_task(self, worker_id: str) -> dict:
        """Lease one task (payload as Binary); an empty struct when there is none."""
        leases = self._svc.request_tasks(_text(worker_id, "worker_id"), 1)
        return lease_with_payload(leases[0]) if leases else {}

    def request_tasks(self, worker_id: str, max_n: int, wait_s: float = 0.0) -> list:
        """Lease up to max_n tasks, long-polling up to wait_s seconds (max 5) for work."""
        if not isinstance(wait_s, (int, float)) or isinstance(wait_s, bool):
            raise BadRequest("wait_s must be a number of seconds")
        leases = self._svc.request_tasks(_text(worker_id, "worker_id"), _int(max_n, "max_n", 1, 256), wait_s)
        return [lease_with_payload(x) for x in leases]

    def complete_task(self, worker_id: str, completion: dict) -> bool:
        """Store one result {task_id, token, detections, timings_ms, error}; Fault 3 if the lease is stale."""
        out = self._svc.complete(_text(worker_id, "worker_id"), [outcome_from_wire(completion)])
        if out["rejected"]:
            reason = out["rejected"][0]["reason"]
            raise StaleLease(reason) if "stale" in reason else UnknownTask(reason)
        return True

    def complete_tasks(self, worker_id: str, completions: list) -> dict:
        """Store many results; returns {accepted: [ids], rejected: [{task_id, reason}]}."""
        outcomes = [outcome_from_wire(c) for c in _items(completions, "completions")]
        return self._svc.complete(_text(worker_id, "worker_id"), outcomes)

    def fail_task(self, worker_id: str, task_id: str, token: str, error: str) -> str:
        """Report that a task could not be processed; returns its new state (PENDING or FAILED)."""
        return self._svc.fail(_text(worker_id, "worker_id"), _text(task_id, "task_id"),
                              _text(token, "token"), str(error)[:500])

    def release_tasks(self, worker_id: str, leases: list) -> int:
        """Hand back unprocessed leases [{task_id, token}]; returns how many were taken back."""
        pairs = [(_text(x.get("task_id"), "task_id"), _text(x.get("token"), "token"))
                 for x in _items(leases, "leases") if isinstance(x, dict)]
        return self._svc.release(_text(worker_id, "worker_id"), pairs)

    def get_results(self, port: int, since: int = 0, limit: int = 100, incarnation: str = "") -> dict:
        """Results of one camera port after cursor `since`: {results, next, missed, incarnation}. Pass
        back the `incarnation` of the page your cursor came from: if the master restarted without its
        state since, you are read from its first result, with `restarted` true."""
        if not isinstance(incarnation, str) or len(incarnation) > 64:
            raise BadRequest("incarnation must be the string a previous page returned")
        return results_page(self._svc.results(_int(port, "port", 0, 65535), _int(since, "since", 0, 2**31 - 1),
                                              _int(limit, "limit", 1, 1000), incarnation))

    def get_events(self, since: int = 0, limit: int = 100) -> dict:
        """Events fired by the alert rules after cursor `since`: {events, next, missed}."""
        return self._svc.get_events(_int(since, "since", 0, 2**31 - 1), _int(limit, "limit", 1, 1000))

    def get_stats(self) -> dict:
        """Counters per port, task states, workers and receivers."""
        return xmlrpc_safe(self._svc.stats())

    def get_tracks(self, camera: str) -> dict:
        """A camera's live tracks, by its name or port: {camera, port, tracks: [{track_id, label, box,
        first_seen, last_seen, state, hits, velocity}]}."""
        return xmlrpc_safe(self._svc.tracks(_text(str(camera), "camera", 64)))

    def get_counts(self) -> dict:
        """Line crossings since the master started: {camera: {port, lines: {line: {direction: {label: n}}}}}."""
        return xmlrpc_safe(self._svc.counts())

    def get_config(self, kind: str, name: str) -> dict:
        """What a role started from the master's address needs: kind "receiver" (its ports, camera names,
        pipelines and detect policies) or "camera" (its source, pace and receiver address), by name,
        with the config's `generation` (it changes on every applied reload)."""
        cameras = self._cameras()
        if kind == "receiver":
            return cameras.receiver(_text(name, "name", 64))
        if kind == "camera":
            return cameras.camera(_text(name, "name", 64))
        raise BadRequest(f"kind must be 'receiver' or 'camera', got {kind!r:.40}")

    def list_cameras(self, host: str = "") -> dict:
        """Every camera of the config file (or those published from `host`): name, port, receiver, source."""
        return self._cameras().list(host if host == "" else _text(host, "host", 255))

    def reload_config(self) -> dict:
        """Read the config file again and apply it whole, or keep the running one: {ok, generation, error,
        added, removed, changed}."""
        return self._cameras().reload()

    def _cameras(self) -> Any:
        if self._svc.cameras is None:
            raise BadRequest("this master runs without a config file (start it with --config framehive.toml)")
        return self._svc.cameras

    def report_source(self, name: str, counters: dict) -> bool:
        """A receiver reports its own counters (frames complete, malformed by reason, ...)."""
        if not isinstance(counters, dict):
            raise BadRequest("counters must be a struct")
        self._svc.report_source(_text(name, "name"), counters)
        return True


MAX_MULTICALL = 32  # calls in one system.multicall
MULTICALL_BUDGET_S = 2.0  # past this, a multicall's remaining calls are answered with a Fault, not run
BLOCKING_VERBS = frozenset({"request_task", "request_tasks"})  # may wait: not inside a multicall
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class _Declared(Exception):
    """An XML-RPC body declares a DOCTYPE (and so may declare entities)."""


def _loads_without_dtd(data: bytes) -> tuple[tuple, str | None]:
    """xmlrpc.client.loads, with a parser that stops at the start of a DOCTYPE, whatever the encoding."""
    parser, unmarshaller = xmlrpc.client.getparser(use_builtin_types=False)
    expat = getattr(parser, "_parser", None)
    if expat is None:  # not the expat parser this guard is written for: refuse rather than expand
        raise RuntimeError("XML-RPC parser without expat")

    def refuse(*_: Any) -> None:
        raise _Declared

    expat.StartDoctypeDeclHandler = refuse
    expat.EntityDeclHandler = refuse
    parser.feed(data)
    parser.close()
    return unmarshaller.close(), unmarshaller.getmethodname()


def declares_dtd(data: bytes) -> bool:
    """Whether an XML-RPC body declares a DOCTYPE or entities, in any encoding (a body that is not
    XML at all declares nothing: its dispatcher answers it with a Fault)."""
    if _DECLARATION.search(data):
        return True
    try:
        _loads_without_dtd(data)
    except _Declared:
        return True
    except Exception:  # noqa: BLE001 - malformed XML or XML-RPC: not this check's business
        return False
    return False


class RpcDispatcher(SimpleXMLRPCDispatcher):
    """Dispatches only MasterRpc's verbs and turns every error into a Fault a user can read."""

    def _marshaled_dispatch(self, data: bytes, dispatch_method: Any = None, path: Any = None) -> bytes:
        """An XML-RPC body never needs a DTD: refusing every DOCTYPE or ENTITY declaration stops
        entity expansion (expat allows 100x amplification: 18 MiB in, gigabytes out). The bytes are
        searched first (cheap, and most bodies are UTF-8); the parser itself refuses a DOCTYPE the
        search cannot see (UTF-16, which expat reads after a byte-order mark), before its first entity.
        Otherwise as the standard library's dispatcher."""
        try:
            if _DECLARATION.search(data):
                raise _Declared
            params, method = _loads_without_dtd(data)
            response = self._dispatch(method, params) if dispatch_method is None else dispatch_method(method, params)
            reply = xmlrpc.client.dumps((response,), methodresponse=True, allow_none=False, encoding="utf-8")
        except _Declared:
            self._errors["xml_declaration"] += 1
            fault = Fault(FAULT_BAD_ARGS, "XML-RPC requests must not declare a DOCTYPE or entities")
            reply = xmlrpc.client.dumps(fault, methodresponse=True, allow_none=False, encoding="utf-8")
        except Fault as fault:
            reply = xmlrpc.client.dumps(fault, allow_none=False, encoding="utf-8")
        except BaseException as exc:  # noqa: BLE001 - as the standard library's dispatcher answers
            reply = xmlrpc.client.dumps(Fault(1, f"{type(exc)}:{exc}"), allow_none=False, encoding="utf-8")
        return reply.encode("utf-8", "xmlcharrefreplace")

    def system_multicall(self, call_list: list) -> list:
        """system.multicall, bounded: at most MAX_MULTICALL calls, none that can block (long polls), no
        nesting; so one request cannot stack the limits of many."""
        if not isinstance(call_list, list) or len(call_list) > MAX_MULTICALL:
            self._errors["multicall_refused"] += 1
            raise Fault(FAULT_BAD_ARGS, f"system.multicall takes a list of at most {MAX_MULTICALL} calls")
        items = 0
        for call in call_list:
            name = call.get("methodName") if isinstance(call, dict) else None
            if name in BLOCKING_VERBS or name == "system.multicall":
                self._errors["multicall_refused"] += 1
                raise Fault(FAULT_BAD_ARGS, f"{name} cannot be called inside system.multicall")
            params = call.get("params") if isinstance(call, dict) else None
            lists = [len(p) for p in params if isinstance(p, list)] if isinstance(params, list) else []
            items += sum(lists) if lists else 1  # tasks, completions, held ids: whichever argument holds them
        if items > MAX_BATCH_ITEMS:  # the batch caps hold for the request as a whole
            self._errors["multicall_refused"] += 1
            raise Fault(FAULT_BAD_ARGS, f"system.multicall carries {items} items in all (max {MAX_BATCH_ITEMS})")
        # and its time: some verbs take long without waiting, or have long replies (get_stats of a big
        # cluster, ~1 s); the first call always runs, the rest only while the budget lasts
        deadline = time.monotonic() + MULTICALL_BUDGET_S
        results: list = []
        for n, call in enumerate(call_list):
            if n and time.monotonic() > deadline:
                self._errors["multicall_over_time"] += 1
                results.append({"faultCode": FAULT_BAD_ARGS, "faultString": "system.multicall: its "
                                f"{MULTICALL_BUDGET_S:g} s time budget was spent before this call; send it again"})
                continue
            try:
                value = self._dispatch(call["methodName"], call["params"])
                # the reply is written after every call ran; writing this one now puts its cost (several
                # times the value's size, ~1 s for a big get_stats) in the budget, and one that cannot be
                # written fails this call alone, not the whole multicall
                xmlrpc.client.dumps((value,), allow_none=False, encoding="utf-8")
                results.append([value])
            except Fault as fault:
                results.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
            except BaseException as exc:  # noqa: BLE001 - as the standard library's multicall answers
                results.append({"faultCode": 1, "faultString": f"{type(exc)}:{exc}"})
        return results

    def __init__(self, rpc: MasterRpc, errors: Any) -> None:
        super().__init__(allow_none=False, encoding="utf-8", use_builtin_types=False)
        self._errors = errors
        self._signatures: dict[str, inspect.Signature] = {}
        for name, fn in inspect.getmembers(rpc, inspect.ismethod):
            if not name.startswith("_"):
                self.register_function(fn, name)
        self.register_introspection_functions()
        self.register_multicall_functions()

    def _dispatch(self, method: str, params: tuple) -> Any:
        fn: Callable | None = self.funcs.get(method)
        if fn is None:
            self._errors["unknown_verb"] += 1
            verbs = ", ".join(sorted(self.funcs))
            raise Fault(FAULT_UNKNOWN_VERB, f"unknown verb {method!r}; verbs: {verbs}")
        signature = self._signatures.get(method)
        if signature is None:  # built once per verb: inspecting it cost ~2 % of the master's CPU per call
            signature = self._signatures[method] = inspect.signature(fn)
        try:
            signature.bind(*params)
        except TypeError as e:
            self._errors["bad_arguments"] += 1
            raise Fault(FAULT_BAD_ARGS, f"{method}{signature}: {e}") from None
        try:
            return fn(*params)
        except Fault:
            raise
        except FramehiveError as e:
            code = next(c for t, c in _FAULTS if isinstance(e, t))
            self._errors[type(e).__name__] += 1
            raise Fault(code, f"{method}: {e}") from None
        except Exception:
            self._errors["internal"] += 1
            log.exception("verb %s failed", method)
            raise Fault(FAULT_INTERNAL, f"{method}: internal error (details in the master's log)") from None


INT32_MAX = 2**31 - 1


def xmlrpc_safe(value: Any) -> Any:
    """`value` with every integer XML-RPC cannot carry (beyond 32 bits: a receiver's byte count after
    a few hours) turned into a float, and None into "" (XML-RPC has neither)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -INT32_MAX - 1 <= value <= INT32_MAX else float(value)
    if isinstance(value, dict):
        return {str(k): xmlrpc_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [xmlrpc_safe(v) for v in value]
    if value is None:
        return ""
    return value
