// Audio for the WebSocket transport: the microphone as pcm16 24 kHz pieces, and the assistant's pcm16 played as
// it streams, with an account of how much of each item was actually heard (for `conversation.item.truncate`).
// Over WebRTC the browser does both itself, on the peer connection's tracks.

export const RATE = 24000;

export class Microphone {
  constructor(context) {
    this.context = context;
    this.stream = null;
    this.node = null;
  }

  // Calls `onPiece(ArrayBuffer)` with 100 ms of pcm16 until stopped.
  async start(onPiece) {
    await this.context.audioWorklet.addModule("/console/capture-worklet.js");
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false },
    });
    const source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, "pcm16-capture");
    this.node.port.onmessage = (message) => onPiece(message.data);
    source.connect(this.node);
  }

  stop() {
    this.node?.disconnect();
    this.stream?.getTracks().forEach((track) => track.stop());
    this.node = this.stream = null;
  }
}

export class Player {
  constructor(context) {
    this.context = context;
    this.sources = [];
    this.endsAt = 0; // context time at which the queued audio runs out
    this.item = null; // { id, startedAt, queuedMs }
    this.playedMs = 0; // audio played to its end so far, over every item
  }

  get playing() {
    return this.item !== null && this.context.currentTime < this.endsAt;
  }

  // Queues a piece of the item's pcm16 right after what is already queued.
  play(itemId, pcm16) {
    const samples = new Int16Array(pcm16.buffer, pcm16.byteOffset, pcm16.byteLength >> 1);
    if (samples.length === 0) return;
    const buffer = this.context.createBuffer(1, samples.length, RATE);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.endsAt, this.context.currentTime + 0.02);
    if (this.item?.id !== itemId) this.item = { id: itemId, startedAt: at, queuedMs: 0 };
    source.start(at);
    source.onended = () => {
      this.sources = this.sources.filter((s) => s !== source);
      this.playedMs += buffer.duration * 1000;
    };
    this.sources.push(source);
    this.endsAt = at + buffer.duration;
    this.item.queuedMs += buffer.duration * 1000;
  }

  // Stops playback at once; says which item was cut and how many of its milliseconds were heard.
  stop() {
    const item = this.item;
    const heardMs = item ? Math.round(Math.min(item.queuedMs, (this.context.currentTime - item.startedAt) * 1000)) : 0;
    for (const source of this.sources) {
      source.onended = null;
      source.stop();
    }
    this.sources = [];
    this.endsAt = 0;
    this.item = null;
    return item ? { itemId: item.id, heardMs: Math.max(0, heardMs) } : null;
  }
}

export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}
