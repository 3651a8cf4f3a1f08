// A small Node.js client for infergate, built at run time from the repository's proto/
// folder (the contract; nothing is generated or copied): inference with raw tensors,
// model metadata, and model registration over the admin service.
//
//   import { InferGateClient } from "infergate-client";
//   const client = new InferGateClient("127.0.0.1:8001", { token: process.env.INFERGATE_ADMIN_TOKEN });
//   const { y } = await client.infer("digits", {
//     x: { datatype: "FP32", shape: [1, 64], data: new Float32Array(64) },
//   });
//   console.log(y.shape, y.data);  // [1, 10] Float32Array(10)
//   client.close();
//
// Tensors are { datatype, shape, data }. data: a typed array or plain array of numbers
// for numeric datatypes (BigInt64Array / BigUint64Array, or BigInts, for INT64/UINT64;
// FP16 and BF16 as their uint16 bit patterns), an array of booleans for BOOL, an array
// of strings (sent as UTF-8) or Buffers for BYTES. Outputs come back the same way
// (BYTES as Buffers). Every tensor travels as raw little-endian bytes.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../proto");
const CHUNK_BYTES = 1024 * 1024;
const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

// datatype -> [bytes per element, DataView accessor, array type of the decoded values]
const NUMERIC = {
  UINT8: [1, "Uint8", Uint8Array],
  UINT16: [2, "Uint16", Uint16Array],
  UINT32: [4, "Uint32", Uint32Array],
  UINT64: [8, "BigUint64", BigUint64Array],
  INT8: [1, "Int8", Int8Array],
  INT16: [2, "Int16", Int16Array],
  INT32: [4, "Int32", Int32Array],
  INT64: [8, "BigInt64", BigInt64Array],
  FP16: [2, "Uint16", Uint16Array], // bit patterns: JavaScript has no float16
  FP32: [4, "Float32", Float32Array],
  FP64: [8, "Float64", Float64Array],
  BF16: [2, "Uint16", Uint16Array], // bit patterns: the top half of a float32's
};
const BIG = new Set(["UINT64", "INT64"]);

/** A call the gateway refused or failed: `code` is the gRPC status number, `status` its name. */
export class InferGateError extends Error {
  constructor(error) {
    const status = grpc.status[error.code] ?? "UNKNOWN";
    super(`${status}: ${error.details ?? error.message}`);
    this.name = "InferGateError";
    this.code = error.code;
    this.status = status;
    this.details = error.details ?? error.message;
  }
}

function elementCount(shape) {
  return shape.reduce((n, d) => n * Number(d), 1);
}

/** The raw little-endian bytes of one tensor, as raw_input_contents carries them. */
export function encodeTensor(name, { datatype, shape, data }) {
  const count = elementCount(shape);
  const values = Array.from(data);
  if (values.length !== count) {
    throw new Error(`input '${name}': shape [${shape}] holds ${count} elements, data has ${values.length}`);
  }
  if (datatype === "BYTES") {
    const parts = [];
    for (const value of values) {
      const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value);
      const length = Buffer.alloc(4);
      length.writeUInt32LE(bytes.length);
      parts.push(length, bytes);
    }
    return Buffer.concat(parts);
  }
  if (datatype === "BOOL") {
    return Buffer.from(values.map((v) => (v ? 1 : 0)));
  }
  const spec = NUMERIC[datatype];
  if (!spec) throw new Error(`input '${name}': unknown datatype ${datatype}`);
  const [size, kind] = spec;
  const buffer = Buffer.alloc(count * size);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const write = view[`set${kind}`].bind(view);
  values.forEach((v, i) => write(i * size, BIG.has(datatype) ? BigInt(v) : v, true));
  return buffer;
}

/** One output tensor from its raw little-endian bytes. */
export function decodeTensor({ name, datatype, shape }, raw) {
  const count = elementCount(shape);
  const buffer = Buffer.from(raw);
  if (datatype === "BYTES") {
    const data = [];
    let offset = 0;
    for (let i = 0; i < count; i++) {
      const length = buffer.readUInt32LE(offset);
      data.push(buffer.subarray(offset + 4, offset + 4 + length));
      offset += 4 + length;
    }
    return { name, datatype, shape, data };
  }
  if (datatype === "BOOL") {
    return { name, datatype, shape, data: Array.from(buffer, (b) => b !== 0) };
  }
  const [size, kind, ArrayType] = NUMERIC[datatype];
  if (buffer.length !== count * size) {
    throw new Error(`output '${name}': ${buffer.length} bytes for ${count} ${datatype} elements`);
  }
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const read = view[`get${kind}`].bind(view);
  const data = new ArrayType(count);
  for (let i = 0; i < count; i++) data[i] = read(i * size, true);
  return { name, datatype, shape, data };
}

function loadServices(protoDir) {
  const definition = protoLoader.loadSync(["inference.proto", "admin.proto"], {
    includeDirs: [protoDir],
    keepCase: true, // field names as the .proto spells them: model_name, raw_input_contents
    longs: Number, // shapes and counts as numbers
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition);
  return {
    Inference: loaded.inference.GRPCInferenceService,
    Admin: loaded.infergate.admin.v1.ModelAdmin,
  };
}

async function sha256(file) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk);
  return hash.digest("hex");
}

export class InferGateClient {
  /**
   * @param {string} address host:port of the gateway
   * @param {object} [options]
   * @param {string} [options.token] sent as `authorization: Bearer <token>` (the admin
   *   token for registration; the inference token where inference needs one)
   * @param {{ca?: Buffer, cert?: Buffer, key?: Buffer}} [options.tls] TLS (cert + key: mutual TLS)
   * @param {number} [options.timeoutMs] deadline of each call but uploads (default 30 s)
   * @param {string} [options.protoDir] where inference.proto and admin.proto are
   */
  constructor(address, { token, tls, timeoutMs = 30000, protoDir = PROTO_DIR } = {}) {
    const { Inference, Admin } = loadServices(protoDir);
    const credentials = tls
      ? grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null)
      : grpc.credentials.createInsecure();
    const options = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    };
    // grpc-js shares one connection between the two (same address, same options).
    this.inference = new Inference(address, credentials, options);
    this.admin = new Admin(address, credentials, options);
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set("authorization", `Bearer ${token}`);
    this.timeoutMs = timeoutMs;
  }

  _unary(stub, method, request, timeoutMs = this.timeoutMs) {
    const deadline = timeoutMs == null ? Infinity : Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      stub[method](request, this.metadata, { deadline }, (error, response) =>
        error ? reject(new InferGateError(error)) : resolve(response),
      );
    });
  }

  async serverLive() {
    return (await this._unary(this.inference, "ServerLive", {})).live;
  }

  async modelMetadata(model, version = "") {
    return this._unary(this.inference, "ModelMetadata", { name: model, version });
  }

  /**
   * Run a model; its outputs by name, each { name, datatype, shape, data }.
   * @param {string} model
   * @param {Record<string, {datatype: string, shape: number[], data: any}>} inputs
   * @param {{outputs?: string[], version?: string, id?: string, timeoutMs?: number}} [options]
   */
  async infer(model, inputs, { outputs = [], version = "", id = "", timeoutMs } = {}) {
    const request = {
      model_name: model,
      model_version: version,
      id,
      inputs: Object.entries(inputs).map(([name, t]) => ({ name, datatype: t.datatype, shape: t.shape })),
      outputs: outputs.map((name) => ({ name })),
      raw_input_contents: Object.entries(inputs).map(([name, t]) => encodeTensor(name, t)),
    };
    const response = await this._unary(this.inference, "ModelInfer", request, timeoutMs);
    const result = {};
    response.outputs.forEach((tensor, i) => {
      result[tensor.name] = decodeTensor(tensor, response.raw_output_contents[i]);
    });
    return result;
  }

  /**
   * Upload a model version over the admin service (needs the admin token) and serve it.
   * @param {string} name
   * @param {Record<string, string>} files artifact name ("model.onnx") -> local path
   * @param {{version?: string, timeoutMs?: number|null}} [options] no deadline by default
   */
  async registerModel(name, files, { version = "", timeoutMs = null } = {}) {
    const artifacts = [];
    for (const [filename, file] of Object.entries(files)) {
      artifacts.push({ filename, file, size: (await stat(file)).size, sha256: await sha256(file) });
    }
    const deadline = timeoutMs == null ? Infinity : Date.now() + timeoutMs;
    let call;
    const answered = new Promise((resolve, reject) => {
      call = this.admin.RegisterModel(this.metadata, { deadline }, (error, response) =>
        error ? reject(new InferGateError(error)) : resolve(response),
      );
    });
    // Settles when the call ends: a refused upload (a wrong token) must not leave a
    // write waiting for a 'drain' that never comes.
    const ended = answered.then(
      () => {},
      () => {},
    );
    const send = (message) =>
      call.write(message)
        ? Promise.resolve()
        : Promise.race([new Promise((resolve) => call.once("drain", resolve)), ended]);
    try {
      await send({
        header: {
          name,
          version,
          artifacts: artifacts.map(({ filename, size, sha256: digest }) => ({ filename, size, sha256: digest })),
        },
      });
      for (const { filename, file } of artifacts) {
        for await (const data of createReadStream(file, { highWaterMark: CHUNK_BYTES })) {
          await send({ chunk: { filename, data } });
        }
      }
    } finally {
      call.end();
    }
    return answered;
  }

  close() {
    this.admin.close();
    this.inference.close();
  }
}
