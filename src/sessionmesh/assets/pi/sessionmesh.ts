// sessionmesh for Pi: puts this Pi session on the mesh, offers the mesh tools, and
// delivers peers' messages into Pi's turns.
//
// Pi has no MCP, so this extension is a small MCP client: it starts `mesh mcp` as a
// child process (which also holds the agent's name online) and registers each mesh
// tool it lists as a Pi tool. Messages reach the model through `mesh hook pi EVENT`,
// run at the same moments Claude Code runs its hooks: at session start and before
// each prompt (into the turn that starts), after each tool call (as a steering
// message the model reads before its next request) and when the agent stops (an
// unread urgent message starts one more turn). Before each tool call it asks the
// hook whether a pair guard's stop refuses it. The Python side frames the text and
// decides what to show; what it showed counts as read only at a later event of the
// same session that follows a model response (a tool result, the stop), so every
// text delivered here is followed by such an event: the session id is Pi's own.
//
// No dependency beyond Node and Pi itself: `mesh install pi` copies this file into
// `.pi/extensions/` and fills in the two lines marked below.

import { spawn, type ChildProcess } from "node:child_process";
import type { ExtensionAPI, ExtensionContext } from "@mariozechner/pi-coding-agent";

const MESH: string[] = ["mesh"]; // replaced by mesh install
const INSTALLED_ARGS: string[] = []; // replaced by mesh install: e.g. ["--as", "frontend"]

const CUSTOM_TYPE = "sessionmesh";
const CLIENT_KIND = "pi";
const PROTOCOL_VERSION = "2025-06-18";
// The mesh tools offered to Pi's model. get_messages is left out: this extension
// delivers messages itself.
const TOOLS = [
  "list_peers",
  "send",
  "reply",
  "ask",
  "ask_all",
  "track",
  "lock",
  "unlock",
  "locks",
  "set_status",
  "set_policy",
  "pair",
  "await_idle",
];
// The tools that wait for peers, with the argument that bounds their wait (seconds)
// and its default: their call may take that long, and then some.
const WAITING_TOOLS: Record<string, [string, number]> = {
  ask_all: ["timeout_seconds", 300],
  await_idle: ["timeout", 600],
};
const MAX_WAIT_S = 3_600; // what the tools accept

const HOOK_TIMEOUT_MS = 10_000; // a hook is one broker call; past this it is stuck
const MCP_START_TIMEOUT_MS = 15_000; // `mesh mcp` answers initialize before it loads
const TOOL_CALL_TIMEOUT_MS = 120_000; // a mesh tool answers at once (ask too), but WAITING_TOOLS
const CHILD_EXIT_TIMEOUT_MS = 2_000; // after closing its stdin, before SIGTERM
// Headless (`pi -p`) exits once its prompt is done; a turn started by an urgent
// message at the stop is waited for this long before Pi may exit.
const CONTINUATION_TIMEOUT_MS = 600_000;
const STDERR_KEEP = 4_000; // characters of the child's stderr kept for error messages

type Json = Record<string, unknown>;

/** The extra arguments of every `mesh` command: the installed `--as`, `--home`, `--url`
 * (as for every program, an installed `--as` names the agent over MESH_NAME). */
function meshArgs(): string[] {
  return [...INSTALLED_ARGS];
}

function meshSpawn(sub: string[], cwd: string): ChildProcess {
  return spawn(MESH[0], [...MESH.slice(1), ...sub, ...meshArgs()], {
    cwd,
    env: process.env,
    stdio: ["pipe", "pipe", "pipe"],
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// -- MCP over the child's stdin/stdout ----------------------------------------------

type McpTool = { name: string; description?: string; inputSchema?: Json };
type Pending = { resolve: (value: any) => void; reject: (err: Error) => void; timer: NodeJS.Timeout };

/** One `mesh mcp` child and the JSON-RPC 2.0 session with it (newline-delimited). */
class McpChild {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = "";
  private stderr = "";
  exited = false;
  readonly done: Promise<void>;

  constructor(cwd: string) {
    this.child = meshSpawn(["mcp", "--client", CLIENT_KIND], cwd);
    let finish: () => void = () => {};
    this.done = new Promise((resolve) => (finish = resolve));
    const end = (why: string) => {
      if (this.exited) return;
      this.exited = true;
      const detail = this.stderr.trim().split("\n").slice(-3).join(" / ");
      this.failAll(new Error(`mesh mcp ${why}${detail ? `: ${detail}` : ""}`));
      finish();
    };
    this.child.on("error", (err) => end(`could not start (${MESH.join(" ")}): ${errorText(err)}`));
    this.child.on("exit", (code, signal) => end(`exited (${signal ?? code})`));
    this.child.stdin?.on("error", () => {}); // EPIPE once it died: reported by "exit"
    this.child.stdout?.setEncoding("utf8");
    this.child.stdout?.on("data", (chunk: string) => this.receive(chunk));
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEEP);
    });
  }

  /** Send a request; resolves with its result, rejects on an error answer, on the
   * child's death, on `timeoutMs` or when `signal` aborts (then cancels it). */
  request(method: string, params: Json, timeoutMs: number, signal?: AbortSignal): Promise<any> {
    if (this.exited) return Promise.reject(new Error("mesh mcp is not running"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        this.pending.delete(id);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        settle();
        this.notify("notifications/cancelled", { requestId: id, reason: "aborted by the user" });
        reject(new Error("cancelled"));
      };
      const timer = setTimeout(() => {
        settle();
        reject(new Error(`mesh mcp did not answer ${method} within ${timeoutMs / 1000}s`));
      }, timeoutMs);
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        resolve: (value) => (settle(), resolve(value)),
        reject: (err) => (settle(), reject(err)),
        timer,
      });
      this.write({ jsonrpc: "2.0", id, method, params });
    });
  }

  notify(method: string, params?: Json): void {
    this.write({ jsonrpc: "2.0", method, ...(params ? { params } : {}) });
  }

  /** Close stdin (the MCP way to end a stdio server), then signal if it lingers. */
  async close(): Promise<void> {
    if (this.exited) return;
    this.child.stdin?.end();
    const waited = (ms: number) =>
      Promise.race([this.done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    if (await waited(CHILD_EXIT_TIMEOUT_MS)) return;
    this.child.kill("SIGTERM");
    if (await waited(CHILD_EXIT_TIMEOUT_MS)) return;
    this.child.kill("SIGKILL");
  }

  private write(message: Json): void {
    if (!this.exited) this.child.stdin?.write(JSON.stringify(message) + "\n");
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: any;
      try {
        message = JSON.parse(line);
      } catch {
        continue; // not JSON-RPC; the SDK logs to stderr, so this is noise
      }
      this.dispatch(message);
    }
  }

  private dispatch(message: any): void {
    if (message.method !== undefined) {
      // A request from the server (ping, or something this client does not offer);
      // notifications (logging, list_changed) need no answer.
      if (message.id === undefined) return;
      if (message.method === "ping") this.write({ jsonrpc: "2.0", id: message.id, result: {} });
      else this.write({ jsonrpc: "2.0", id: message.id, error: { code: -32601, message: "method not found" } });
      return;
    }
    const waiter = this.pending.get(message.id);
    if (!waiter) return;
    if (message.error) waiter.reject(new Error(message.error.message ?? JSON.stringify(message.error)));
    else waiter.resolve(message.result);
  }

  private failAll(err: Error): void {
    for (const waiter of [...this.pending.values()]) waiter.reject(err);
  }
}

/** The session's `mesh mcp`: started on first need, started again if it died. */
class Mesh {
  private child: McpChild | null = null;
  private starting: Promise<McpChild> | null = null;

  /** A child that has finished the MCP handshake; raises why it could not start. */
  ready(cwd: string): Promise<McpChild> {
    if (this.child && !this.child.exited) return Promise.resolve(this.child);
    if (!this.starting) {
      this.starting = this.start(cwd).finally(() => (this.starting = null));
    }
    return this.starting;
  }

  private async start(cwd: string): Promise<McpChild> {
    const child = new McpChild(cwd);
    try {
      await child.request(
        "initialize",
        {
          protocolVersion: PROTOCOL_VERSION,
          capabilities: {},
          clientInfo: { name: "sessionmesh-pi", version: "1" },
        },
        MCP_START_TIMEOUT_MS,
      );
      child.notify("notifications/initialized");
    } catch (err) {
      await child.close();
      throw err;
    }
    this.child = child;
    return child;
  }

  async listTools(cwd: string): Promise<McpTool[]> {
    const child = await this.ready(cwd);
    const tools: McpTool[] = [];
    let cursor: string | undefined;
    do {
      const page = await child.request("tools/list", cursor ? { cursor } : {}, MCP_START_TIMEOUT_MS);
      tools.push(...(page?.tools ?? []));
      cursor = page?.nextCursor;
    } while (cursor);
    return tools;
  }

  async call(cwd: string, name: string, args: Json, signal?: AbortSignal): Promise<any> {
    const child = await this.ready(cwd);
    return child.request("tools/call", { name, arguments: args }, callTimeoutMs(name, args), signal);
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    await child?.close();
  }
}

/** How long a call of the tool `name` may take: a waiting tool's own bound on top. */
function callTimeoutMs(name: string, args: Json): number {
  const waits = WAITING_TOOLS[name];
  if (!waits) return TOOL_CALL_TIMEOUT_MS;
  const given = Number(args[waits[0]] ?? waits[1]);
  const seconds = Number.isFinite(given) ? Math.min(Math.max(given, 0), MAX_WAIT_S) : waits[1];
  return seconds * 1000 + TOOL_CALL_TIMEOUT_MS;
}

// -- mesh hook pi EVENT -------------------------------------------------------------

type HookAnswer = { context?: string; block?: string; deny?: string };

/** Run `mesh hook pi <event>` with the hook's JSON on stdin and read its answer.
 * Never throws: a hook that fails or says nothing is an empty answer. */
function runHook(event: string, input: Json, cwd: string): Promise<HookAnswer> {
  return new Promise((resolve) => {
    let out = "";
    let child: ChildProcess;
    try {
      child = meshSpawn(["hook", "pi", event], cwd);
    } catch {
      return resolve({});
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), HOOK_TIMEOUT_MS);
    child.on("error", () => {
      clearTimeout(timer);
      resolve({});
    });
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => (out += chunk));
    child.stderr?.resume(); // mesh hook reports its own failures there; never to the model
    child.on("close", () => {
      clearTimeout(timer);
      resolve(parseHook(out));
    });
    child.stdin?.on("error", () => {});
    child.stdin?.end(JSON.stringify(input));
  });
}

function parseHook(stdout: string): HookAnswer {
  const line = stdout.trim().split("\n").pop();
  if (!line) return {};
  try {
    const data = JSON.parse(line);
    if (data?.decision === "block" && typeof data.reason === "string" && data.reason) {
      return { block: data.reason };
    }
    const specific = data?.hookSpecificOutput;
    if (specific?.permissionDecision === "deny" && typeof specific.permissionDecisionReason === "string") {
      return { deny: specific.permissionDecisionReason };
    }
    const text = data?.hookSpecificOutput?.additionalContext;
    return typeof text === "string" && text ? { context: text } : {};
  } catch {
    return {};
  }
}

// -- the extension ------------------------------------------------------------------

function toolContent(result: any): { type: "text"; text: string }[] {
  const parts: { type: "text"; text: string }[] = [];
  for (const item of result?.content ?? []) {
    if (item?.type === "text" && typeof item.text === "string") parts.push({ type: "text", text: item.text });
  }
  if (!parts.length && result?.structuredContent !== undefined) {
    parts.push({ type: "text", text: JSON.stringify(result.structuredContent) });
  }
  return parts;
}

/** A tool's first sentence, for the one line Pi's system prompt gives each tool. */
function snippet(description: string): string {
  const flat = description.replace(/\s+/g, " ").trim();
  const end = flat.search(/\.(\s|$)/);
  return end > 0 ? flat.slice(0, end + 1) : flat;
}

export default function sessionmesh(pi: ExtensionAPI) {
  const mesh = new Mesh();
  const registered = new Set<string>();
  let sessionId = "";
  let cwd = process.cwd();
  let starting: Promise<void> = Promise.resolve(); // the session start's tools and hook
  let startText = ""; // shown at session start, for the first turn
  let hooks: Promise<unknown> = Promise.resolve(); // hooks run one at a time, in event order
  let toolHook: Promise<void> | null = null; // the tool_result hook in flight
  let warned = false;

  // Turns and the stop continuation.
  let openRuns = 0; // agent runs started whose agent_end is not handled yet
  let continuationAsked = false; // a turn was asked for at the stop; its run not started yet
  let continuationOpen = false; // ... or started and its agent_end not handled yet
  let inContinuation = false; // the current run is that turn
  let stopWork: Promise<void> | null = null;
  let changed: () => void = () => {};
  let change = new Promise<void>((resolve) => (changed = resolve));
  const signalChange = () => {
    changed();
    change = new Promise<void>((resolve) => (changed = resolve));
  };

  function warn(ctx: ExtensionContext, text: string) {
    if (warned) return;
    warned = true;
    if (ctx.hasUI) ctx.ui.notify(`sessionmesh: ${text}`, "warning");
    else process.stderr.write(`sessionmesh: ${text}\n`);
  }

  function hook(event: string, extra: Json = {}): Promise<HookAnswer> {
    const input = { session_id: sessionId, cwd, hook_event_name: event, stop_hook_active: false, ...extra };
    const run = hooks.then(() => runHook(event, input, cwd));
    hooks = run;
    return run;
  }

  function deliver(text: string, options: { triggerTurn?: boolean; deliverAs?: "steer" | "followUp" }) {
    pi.sendMessage({ customType: CUSTOM_TYPE, content: text, display: true }, options);
  }

  async function registerTools(ctx: ExtensionContext): Promise<void> {
    if (registered.size) return;
    let tools: McpTool[];
    try {
      tools = await mesh.listTools(ctx.cwd);
    } catch (err) {
      warn(ctx, `the mesh tools are not available: ${errorText(err)}`);
      return;
    }
    for (const tool of tools) {
      if (!TOOLS.includes(tool.name) || registered.has(tool.name)) continue;
      registered.add(tool.name);
      const name = tool.name;
      const description = tool.description ?? name;
      pi.registerTool({
        name,
        label: `mesh ${name}`,
        description,
        promptSnippet: snippet(description),
        // Pi validates arguments against plain JSON Schema as well as TypeBox.
        parameters: (tool.inputSchema ?? { type: "object", properties: {} }) as any,
        async execute(_toolCallId: string, params: any, signal: AbortSignal | undefined) {
          const result = await mesh.call(cwd, name, params ?? {}, signal);
          const content = toolContent(result);
          if (result?.isError) throw new Error(content.map((c) => c.text).join("\n") || `${name} failed`);
          return { content, details: {} };
        },
      });
    }
  }

  // The waiter (`mesh wake pi`): in the terminal UI, a child that waits at the broker
  // while Pi is idle and prints one line per burst of mail; each starts a turn.
  let waiter: ChildProcess | null = null;

  function stopWaiter() {
    if (waiter && waiter.exitCode === null) waiter.kill("SIGTERM");
    waiter = null;
  }

  function startWaiter(ctx: ExtensionContext) {
    stopWaiter();
    const child = meshSpawn(["wake", "pi", "--session", sessionId, "--pid", String(process.pid)], ctx.cwd);
    child.stdin?.end();
    let pending = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let text = "";
        try {
          text = String(JSON.parse(line).wake ?? "");
        } catch {
          continue;
        }
        if (!text) continue;
        // Idle: a new turn; a turn that began meanwhile takes it at its end.
        if (ctx.isIdle()) deliver(text, { triggerTurn: true });
        else deliver(text, { deliverAs: "followUp" });
      }
    });
    child.stderr?.resume();
    child.on("error", (err) => warn(ctx, `the waiter could not start: ${errorText(err)}`));
    waiter = child;
  }

  pi.on("session_start", async (_event, ctx) => {
    sessionId = ctx.sessionManager.getSessionId();
    cwd = ctx.cwd;
    startText = "";
    if (ctx.hasUI) startWaiter(ctx);
    // Not awaited: Pi's editor waits for session_start handlers. The first prompt
    // waits for this instead.
    starting = Promise.all([registerTools(ctx), hook("session_start")]).then(([, answer]) => {
      startText = answer.context ?? "";
    });
  });

  pi.on("before_agent_start", async (_event, ctx) => {
    await starting;
    await registerTools(ctx); // when mesh could not start at session start
    const answer = await hook("before_agent_start");
    const text = [startText, answer.context ?? ""].filter(Boolean).join("\n\n");
    startText = "";
    if (!text) return;
    return { message: { customType: CUSTOM_TYPE, content: text, display: true } };
  });

  pi.on("tool_call", async (event) => {
    // Pair mode: a guard's stop refuses every tool call but the one that acknowledges
    // it. The hook only looks for the stop's file; it asks the broker nothing.
    const answer = await hook("tool_call", { tool_name: event.toolName, tool_input: event.input });
    if (answer.deny) return { block: true, reason: answer.deny };
  });

  pi.on("tool_result", async () => {
    // One hook per batch of parallel tool calls: what it shows is steered into the
    // turn either way, and a second hook would only confirm the first one's text
    // before the model had it.
    if (!toolHook) {
      toolHook = hook("tool_result").then((answer) => {
        toolHook = null;
        if (answer.context) deliver(answer.context, { deliverAs: "steer" });
      });
    }
    await toolHook; // the result itself is left as it is
  });

  pi.on("agent_start", async () => {
    openRuns++;
    inContinuation = continuationAsked;
    continuationAsked = false;
    signalChange();
  });

  pi.on("agent_end", async (event) => {
    const work = (async () => {
      const last = [...(event.messages ?? [])].reverse().find((m: any) => m.role === "assistant") as any;
      const stopped = last?.stopReason === "aborted" || last?.stopReason === "error";
      // A run the user aborted (or that failed) is not kept going.
      const answer = stopped ? {} : await hook("agent_end", { stop_hook_active: inContinuation });
      inContinuation = false;
      continuationOpen = false;
      if (answer.block) {
        continuationAsked = true;
        continuationOpen = true;
        deliver(answer.block, { triggerTurn: true });
      }
    })();
    stopWork = work;
    try {
      await work;
    } finally {
      openRuns = Math.max(0, openRuns - 1);
      if (stopWork === work) stopWork = null;
      signalChange();
    }
  });

  pi.on("session_shutdown", async (_event, ctx) => {
    // Headless Pi exits right after its prompt: let the stop's hook finish, and the
    // turn it started, first. Interactively, quitting means quitting (what that turn
    // would have read stays unread and is offered to the next session).
    if (!ctx.hasUI) {
      const deadline = Date.now() + CONTINUATION_TIMEOUT_MS;
      while (Date.now() < deadline) {
        const idle = ctx.isIdle();
        const lagging = openRuns > 0 && idle; // a finished run's agent_end still queued
        const continuing = continuationOpen && !idle; // (idle with none open: it never started)
        if (!stopWork && !lagging && !continuing) break;
        const left = deadline - Date.now();
        await Promise.race([change, new Promise((r) => setTimeout(r, left).unref())]);
      }
    }
    stopWaiter();
    await mesh.stop();
  });
}
