// A conversation turn through the official OpenAI JavaScript SDK, which always dials wss://.
// Usage: node realtime_smoke.mjs https://127.0.0.1:PORT/v1   (trust the server's certificate with NODE_EXTRA_CA_CERTS)
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const client = new OpenAI({ apiKey: "test-key", baseURL: process.argv[2] });
const rt = new OpenAIRealtimeWS({ model: "gpt-realtime" }, client);
const types = [];
let text = "";
const timer = setTimeout(() => {
  console.error("timed out; events so far:", types.join(" "));
  process.exit(1);
}, 60_000);

rt.on("event", (event) => types.push(event.type));
rt.on("error", (error) => types.push(`error:${error.message}`));
rt.on("session.created", () => {
  rt.send({ type: "session.update", session: { type: "realtime", output_modalities: ["text"] } });
  rt.send({
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text: "Hello from JavaScript" }] },
  });
  rt.send({ type: "response.create" });
});
rt.on("response.output_text.delta", (event) => (text += event.delta));
rt.on("response.done", (event) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ url: rt.url.toString(), types, text, status: event.response.status }));
  rt.close();
  process.exit(0);
});
