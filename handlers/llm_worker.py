"""The LLM worker: takes generation jobs from the JetStream work queue, streams each chat completion from an
OpenAI-compatible endpoint, and publishes the pieces to the session's log as they come.

Workers are competing consumers of one durable pull consumer. A record's `Nats-Msg-Id` derives from its job, so a
redelivered job cannot record the same piece twice (within the stream's duplicate window).

Cancellation is core NATS, not logged: `<prefix>.cancel.<response_id>` (or `<prefix>.drop.<session_id>`, when a
session's client left) reaches every worker; the one streaming that response closes the HTTP stream at once
(llama.cpp stops generating when its client goes away) and publishes nothing more for it. A job cancelled before it
is taken is acknowledged without generating; one past its deadline fails its response.

A job taken over from a worker that stopped is another attempt: its records carry the attempt and ids of their own,
and the state machine decides whether the response can take them (`domain.conversation.generating`).
"""

import asyncio
import time
from typing import TypedDict

import msgspec
import structlog

from domain import records as rec
from domain.jobs import GenerateJob
from handlers.job_loop import Unwanted, serve_jobs
from handlers.llm import DEFAULT_LLM, ChatEndpoint, Finished, LlmError, TextDelta, ToolCallsDelta, resolve_model
from handlers.ports import Delivery, WorkerBus, now_ms

log = structlog.get_logger(__name__)
_jobs = msgspec.json.Decoder(GenerateJob)


class _Attempt(TypedDict):
    """The fields every record of a job's attempt has."""

    at_ms: int
    job_id: str
    response_id: str
    worker: str
    attempt: int


class LlmWorker:
    def __init__(
        self,
        bus: WorkerBus,
        client: ChatEndpoint,
        worker_id: str,
        default_model: str = DEFAULT_LLM,
        at_once: int = 1,
    ) -> None:
        self.default_model = default_model  # what OpenAI's realtime model names (and no name) ask for
        self.bus = bus
        self.client = client
        self.worker_id = worker_id
        self.at_once = at_once  # generations streamed together: an endpoint serves several, the worker only waits
        self.unwanted = Unwanted("llm")
        self._streaming: dict[str, tuple[GenerateJob, asyncio.Task[str]]] = {}  # response_id -> its generation

    async def run(self, stop: asyncio.Event) -> None:
        listening = await self.unwanted.listen(self.bus, then=self._stop_unwanted)
        log.info("llm.worker.ready", worker=self.worker_id)
        try:
            await serve_jobs(self.bus, ("llm",), self.handle, stop, self.at_once)
        finally:
            for subscription in listening:
                await subscription.unsubscribe()

    def _stop_unwanted(self) -> None:
        for job, task in self._streaming.values():
            if self.unwanted.stopped(job) and not task.done():
                task.cancel()  # closes the HTTP stream: the endpoint stops within a token
                log.info("llm.job.cancelling", response_id=job.response_id, worker=self.worker_id)

    async def handle(self, message: Delivery) -> None:
        job = _jobs.decode(message.data)
        attempt = message.metadata.num_delivered
        if (unwanted := self.unwanted.why(job)) is not None:
            if unwanted == "expired":
                note = "The server was too busy to start this answer in time; try again shortly."
                await self._fail(job, attempt, note)
            await message.ack()
            log.info("llm.job.skipped", job_id=job.job_id, response_id=job.response_id, reason=unwanted)
            return
        started = time.perf_counter()
        generation = asyncio.create_task(self._generate(job, attempt))
        self._streaming[job.response_id] = (job, generation)
        outcome = "done"
        try:
            outcome = await generation
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                generation.cancel()
                raise  # the worker itself is stopping: leave the job to be redelivered
            outcome = "cancelled"
        finally:
            self._streaming.pop(job.response_id, None)
        await message.ack()
        log.info(
            "llm.job.finished",
            job_id=job.job_id,
            response_id=job.response_id,
            attempt=attempt,
            outcome=outcome,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _publish(self, job: GenerateJob, attempt: int, name: str | int, record: rec.Record) -> None:
        """One record of the job's attempt, under an id unique to the attempt: a redelivered job's pieces must not
        be taken for, or dropped as, the first attempt's."""
        piece = f"{job.job_id}.{name}" if attempt == 1 else f"{job.job_id}.a{attempt}.{name}"
        await self.bus.publish_record(job.session_id, "llm", record, piece)

    async def _generate(self, job: GenerateJob, attempt: int) -> str:
        """Stream the completion into the log; the outcome ("done" or "failed") for the log line."""
        index = 0
        job = msgspec.structs.replace(job, model=resolve_model(job.model, self.default_model))
        try:
            async for delta in self.client.stream(job):
                if isinstance(delta, Finished):
                    done = rec.GenerationDone(
                        **self._attempt(job, attempt),
                        finish_reason=delta.finish_reason,
                        input_tokens=delta.input_tokens,
                        output_tokens=delta.output_tokens,
                        cached_tokens=delta.cached_tokens,
                        prefill_ms=delta.prefill_ms,
                    )
                    await self._publish(job, attempt, "done", done)
                    return "done"
                record = rec.GenerationDelta(
                    **self._attempt(job, attempt),
                    index=index,
                    text=delta.text if isinstance(delta, TextDelta) else "",
                    tool_calls=delta.tool_calls if isinstance(delta, ToolCallsDelta) else (),
                )
                await self._publish(job, attempt, index, record)
                index += 1
            raise LlmError("the stream ended without a finish")
        except Exception as error:
            if isinstance(error, LlmError):  # the endpoint's fault, said in full by the message
                log.warning("llm.job.failed", job_id=job.job_id, session_id=job.session_id, error=str(error))
            else:
                log.exception("llm.job.failed", job_id=job.job_id, session_id=job.session_id)
            await self._fail(job, attempt, f"Generation failed: {error}")
            return "failed"

    async def _fail(self, job: GenerateJob, attempt: int, message: str) -> None:
        record = rec.GenerationFailed(**self._attempt(job, attempt), message=message)
        await self._publish(job, attempt, "failed", record)

    def _attempt(self, job: GenerateJob, attempt: int) -> _Attempt:
        return _Attempt(
            at_ms=now_ms(), job_id=job.job_id, response_id=job.response_id, worker=self.worker_id, attempt=attempt
        )
