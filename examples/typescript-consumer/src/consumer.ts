// A streamd consumer in TypeScript (Node, @grpc/grpc-js), speaking the
// Subscribe protocol of proto/streamd/v1/streamd.proto as
// docs/subscribe-protocol.md describes it:
//
//   - Init with the stored position (journal id + offset) or, the first
//     time, START_POLICY_EARLIEST; the consumer's name; its filter.
//   - Hello: the journal id is checked against the stored one.
//   - EventBatch: each event is handled (here: one line appended to the
//     output file), then the position moves to its offset; Progress moves
//     the position over events the producer filtered away.
//   - The position is stored in a file, atomically (write, fsync, rename),
//     together with the length of the output file it covers: after a crash
//     the output is cut back to that length and the events after the
//     position come again, so each event's line is written exactly once.
//   - OffsetReport tells the producer the stored position, so that
//     `streamctl consumers list` at the producer shows this consumer's lag.
//   - Unavailable (a restarting producer) is retried with backoff;
//     FailedPrecondition (another journal) and OutOfRange (below retention)
//     stop the consumer with what to do.
//
// Usage:
//   node dist/consumer.js --addr 127.0.0.1:7070 --name ts-consumer \
//     --positions positions.json --output events.log --filter 'exclude tag=noise'

import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

interface Options {
  addr: string;
  name: string;
  positions: string;
  output: string;
  filter: string[];
}

// Position is what the positions file holds: where the consumer stands in
// one journal, and the output bytes written up to there.
interface Position {
  journalId: string; // hex
  offset: string; // uint64 as a decimal string
  outputBytes: number;
}

function usage(msg: string): never {
  console.error(`consumer: ${msg}`);
  console.error("usage: consumer --addr HOST:PORT --name NAME --positions FILE --output FILE [--filter 'include|exclude FIELD=VALUE']...");
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { addr: "127.0.0.1:7070", name: "ts-consumer", positions: "positions.json", output: "events.log", filter: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case "--addr": o.addr = value; break;
      case "--name": o.name = value; break;
      case "--positions": o.positions = value; break;
      case "--output": o.output = value; break;
      case "--filter": o.filter.push(value); break;
      default: usage(`unknown flag ${flag}`);
    }
  }
  return o;
}

// The text syntax of filter criteria (a subset of streamctl's: no ttl=).
const FIELDS: Record<string, string> = {
  "type=": "FILTER_FIELD_ENTITY_TYPE",
  "entity=": "FILTER_FIELD_ENTITY_ID",
  "entity~": "FILTER_FIELD_ENTITY_ID_REGEX",
  "tag=": "FILTER_FIELD_TAG",
  "topic=": "FILTER_FIELD_TOPIC",
  "event=": "FILTER_FIELD_EVENT_TYPE",
  "origin=": "FILTER_FIELD_ORIGIN",
};

function parseCriterion(text: string) {
  const m = /^(include|exclude)\s+(\S+)$/.exec(text.trim());
  if (!m) usage(`--filter ${JSON.stringify(text)}: want 'include FIELD=VALUE' or 'exclude FIELD=VALUE'`);
  const key = Object.keys(FIELDS).find((k) => m[2].startsWith(k));
  if (!key || m[2].length === key.length) {
    usage(`--filter ${JSON.stringify(text)}: want a field of ${Object.keys(FIELDS).join(" ")} and a value`);
  }
  return {
    action: m[1] === "include" ? "FILTER_ACTION_INCLUDE" : "FILTER_ACTION_EXCLUDE",
    field: FIELDS[key],
    value: m[2].slice(key.length),
  };
}

function loadPosition(file: string): Position | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e: any) {
    if (e.code === "ENOENT") return undefined;
    throw e;
  }
  const p = JSON.parse(text) as Position;
  if (!/^[0-9a-f]{32}$/.test(p.journalId) || !/^\d+$/.test(p.offset) || !Number.isInteger(p.outputBytes)) {
    throw new Error(`positions file ${file} is damaged: ${text}`);
  }
  return p;
}

// storePosition replaces the positions file atomically and durably.
function storePosition(file: string, p: Position) {
  const tmp = file + ".tmp";
  const fd = fs.openSync(tmp, "w");
  fs.writeSync(fd, JSON.stringify(p));
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  const dir = fs.openSync(path.dirname(path.resolve(file)), "r");
  fs.fsyncSync(dir);
  fs.closeSync(dir);
}

const protoDir = path.resolve(__dirname, "..", "..", "..", "proto");
const def = protoLoader.loadSync(path.join(protoDir, "streamd", "v1", "streamd.proto"), {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String, // uint64 offsets as decimal strings: no precision lost
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
});
const streamd = (grpc.loadPackageDefinition(def) as any).streamd.v1;

// Fatal errors end the consumer: retrying cannot cure them.
class Fatal extends Error {}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const filter = o.filter.map(parseCriterion);
  const client = new streamd.EventStreamService(o.addr, grpc.credentials.createInsecure());
  let backoff = 100;
  for (;;) {
    try {
      await follow(client, o, filter);
      backoff = 100;
    } catch (e: any) {
      if (e instanceof Fatal) {
        console.error(`consumer: ${e.message}`);
        process.exit(1);
      }
      console.error(`consumer: stream ended (${e.message}); reconnecting`);
    }
    await new Promise((r) => setTimeout(r, Math.random() * backoff));
    backoff = Math.min(backoff * 2, 5000);
  }
}

// follow runs one Subscribe stream until it ends.
function follow(client: any, o: Options, filter: object[]): Promise<void> {
  let pos = loadPosition(o.positions);
  // Effects past the stored position are cut: their events come again.
  const out = fs.openSync(o.output, "a+");
  fs.ftruncateSync(out, pos ? pos.outputBytes : 0);
  let outputBytes = pos ? pos.outputBytes : 0;

  return new Promise((resolve, reject) => {
    const call = client.Subscribe();
    let reported = pos?.offset ?? "0";
    let lastReport = 0;
    let accepted = false; // the producer takes OffsetReport
    // report tells the producer the stored offset, at most once a second.
    const report = () => {
      const now = Date.now();
      if (accepted && pos && pos.offset !== reported && now - lastReport >= 1000) {
        call.write({ offset_report: { stored_offset: pos.offset } });
        reported = pos.offset;
        lastReport = now;
      }
    };
    const timer = setInterval(report, 1000);
    const done = (err?: Error) => {
      clearInterval(timer);
      call.removeAllListeners();
      call.on("error", () => {});
      call.cancel();
      fs.closeSync(out);
      err ? reject(err) : resolve();
    };
    const move = (offset: string) => {
      pos = { journalId: pos!.journalId, offset, outputBytes };
      fs.fsyncSync(out); // the effects first, then the position that covers them
      storePosition(o.positions, pos);
      report();
    };

    call.on("data", (msg: any) => {
      try {
        switch (msg.response) {
          case "hello": {
            const h = msg.hello;
            const jid = Buffer.from(h.journal_id).toString("hex");
            if (pos && pos.journalId !== jid) {
              throw new Fatal(`the producer's journal is ${jid}, the stored position is in ${pos.journalId}: the journal was replaced; delete ${o.positions} to start again from its earliest event`);
            }
            accepted = h.accepts_offset_reports;
            if (!pos) {
              // Started from a policy: the position is just before the start.
              pos = { journalId: jid, offset: (BigInt(h.start_offset) - 1n).toString(), outputBytes };
              storePosition(o.positions, pos);
            }
            console.error(`consumer: stream open, journal ${jid}, from offset ${BigInt(pos.offset) + 1n}`);
            break;
          }
          case "events": {
            if (msg.events.replay) break; // this consumer asks for no replays
            let lines = "";
            let last = pos!.offset;
            for (const e of msg.events.events) {
              if (BigInt(e.offset) <= BigInt(pos!.offset)) continue; // never twice
              lines += `${e.offset} ${e.entity_type}/${e.entity_id} ${e.seq_nr} ${e.event_type}\n`;
              last = e.offset;
            }
            if (lines) {
              outputBytes += fs.writeSync(out, lines);
              move(last);
            }
            break;
          }
          case "progress":
            if (BigInt(msg.progress.offset) > BigInt(pos!.offset)) move(msg.progress.offset);
            break;
        }
      } catch (e: any) {
        done(e);
      }
    });
    call.on("error", (err: any) => {
      switch (err.code) {
        case grpc.status.FAILED_PRECONDITION:
        case grpc.status.OUT_OF_RANGE:
        case grpc.status.INVALID_ARGUMENT:
        case grpc.status.NOT_FOUND:
          done(new Fatal(`${grpc.status[err.code]}: ${err.details}`));
          break;
        default:
          done(err);
      }
    });
    call.on("end", () => done(new Error("the producer ended the stream")));

    const init: any = { consumer_name: o.name, filter };
    if (pos) {
      init.position = { journal_id: Buffer.from(pos.journalId, "hex"), offset: pos.offset };
    } else {
      init.start_policy = "START_POLICY_EARLIEST";
    }
    call.write({ init });
  });
}

main();
