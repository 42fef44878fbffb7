"""The LLM worker: takes generation jobs from the JetStream work queue, streams each chat completion from an
OpenAI-compatible endpoint, and publishes the pieces to the session's log as they come.

Workers are competing consumers of one durable pull consumer. A record's `Nats-Msg-Id` derives from its job, so a
redelivered job cannot record the same piece twice (within the stream's duplicate window).

Cancellation is core NATS, not logged: `<prefix>.cancel.<response_id>` reaches every worker; the one streaming that
response closes the HTTP stream at once (llama.cpp stops generating when its client goes away) and publishes nothing
more for it. A cancel that arrives before its job is taken makes the job be acknowledged without generating.
"""

import asyncio
import time

import msgspec
import structlog

from domain import records as rec
from domain.jobs import GenerateJob
from handlers.job_loop import CancelledResponses, serve_jobs
from handlers.llm import DEFAULT_LLM, ChatClient, Finished, LlmError, TextDelta, ToolCallsDelta, resolve_model
from handlers.ports import Delivery, WorkerBus, now_ms

log = structlog.get_logger(__name__)
_jobs = msgspec.json.Decoder(GenerateJob)
_PROGRESS_EVERY_S = 5.0


class LlmWorker:
    def __init__(
        self,
        bus: WorkerBus,
        client: ChatClient,
        worker_id: str,
        default_model: str = DEFAULT_LLM,
    ) -> None:
        self.default_model = default_model  # what OpenAI's realtime model names (and no name) ask for
        self.bus = bus
        self.client = client
        self.worker_id = worker_id
        self.cancelled = CancelledResponses()
        self._streaming: dict[str, asyncio.Task[str]] = {}  # response_id -> its generation

    async def run(self, stop: asyncio.Event) -> None:
        cancels = await self.cancelled.listen(self.bus, then=self._stop_generating)
        log.info("llm.worker.ready", worker=self.worker_id)
        try:
            await serve_jobs(self.bus, ("llm",), self.handle, stop)
        finally:
            await cancels.unsubscribe()

    def _stop_generating(self, response_id: str) -> None:
        if (task := self._streaming.get(response_id)) is not None:
            task.cancel()  # closes the HTTP stream: the endpoint stops within a token
            log.info("llm.job.cancelling", response_id=response_id, worker=self.worker_id)

    async def handle(self, message: Delivery) -> None:
        job = _jobs.decode(message.data)
        if job.response_id in self.cancelled:
            await message.ack()
            log.info("llm.job.skipped", job_id=job.job_id, response_id=job.response_id, reason="cancelled")
            return
        started = time.perf_counter()
        generation = asyncio.create_task(self._generate(job, message))
        self._streaming[job.response_id] = generation
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
            outcome=outcome,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _generate(self, job: GenerateJob, message: Delivery) -> str:
        """Stream the completion into the log; the outcome ("done" or "failed") for the log line."""
        index = 0
        progress_at = time.monotonic()
        job = msgspec.structs.replace(job, model=resolve_model(job.model, self.default_model))
        try:
            async for delta in self.client.stream(job):
                if isinstance(delta, Finished):
                    done = rec.GenerationDone(
                        at_ms=now_ms(),
                        job_id=job.job_id,
                        response_id=job.response_id,
                        finish_reason=delta.finish_reason,
                        worker=self.worker_id,
                        input_tokens=delta.input_tokens,
                        output_tokens=delta.output_tokens,
                    )
                    await self.bus.publish_record(job.session_id, "llm", done, f"{job.job_id}.done")
                    return "done"
                record = rec.GenerationDelta(
                    at_ms=now_ms(),
                    job_id=job.job_id,
                    response_id=job.response_id,
                    index=index,
                    worker=self.worker_id,
                    text=delta.text if isinstance(delta, TextDelta) else "",
                    tool_calls=delta.tool_calls if isinstance(delta, ToolCallsDelta) else (),
                )
                await self.bus.publish_record(job.session_id, "llm", record, f"{job.job_id}.{index}")
                index += 1
                if time.monotonic() - progress_at > _PROGRESS_EVERY_S:
                    progress_at = time.monotonic()
                    await message.in_progress()
            raise LlmError("the stream ended without a finish")
        except Exception as error:
            if isinstance(error, LlmError):  # the endpoint's fault, said in full by the message
                log.warning("llm.job.failed", job_id=job.job_id, session_id=job.session_id, error=str(error))
            else:
                log.exception("llm.job.failed", job_id=job.job_id, session_id=job.session_id)
            failed = rec.GenerationFailed(
                at_ms=now_ms(),
                job_id=job.job_id,
                response_id=job.response_id,
                message=f"Generation failed: {error}",
                worker=self.worker_id,
            )
            await self.bus.publish_record(job.session_id, "llm", failed, f"{job.job_id}.failed")
            return "failed"
