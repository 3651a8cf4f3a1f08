// The Node.js client against a live gateway. tests/clients/test_node_client.py starts
// one and runs this file with its address and admin token in the environment:
//   INFERGATE_ADDRESS       host:port
//   INFERGATE_ADMIN_TOKEN   the gateway's admin token
//   INFERGATE_ONNX          an ONNX model to register (the digits demo model)
//   INFERGATE_DIGITS_CASE   JSON {shape, x, y}: an input for `digits` and its expected output
// It fails, rather than skips, when any is missing.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test } from "node:test";

import { InferGateClient, InferGateError } from "../index.js";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/clients/test_node_client.py`);
  return value;
}

const address = required("INFERGATE_ADDRESS");
const token = required("INFERGATE_ADMIN_TOKEN");
const onnx = required("INFERGATE_ONNX");
const digits = JSON.parse(readFileSync(required("INFERGATE_DIGITS_CASE"), "utf8"));

const client = new InferGateClient(address, { token });
const anonymous = new InferGateClient(address);
after(() => {
  client.close();
  anonymous.close();
});

test("the server is live and describes its model", async () => {
  assert.equal(await client.serverLive(), true);
  const metadata = await client.modelMetadata("digits");
  assert.equal(metadata.name, "digits");
  assert.deepEqual(
    metadata.inputs.map((t) => [t.name, t.datatype]),
    [["x", "FP32"]],
  );
});

test("raw FP32 tensors go in and the model's answer comes out", async () => {
  const { y } = await client.infer("digits", {
    x: { datatype: "FP32", shape: digits.shape, data: Float32Array.from(digits.x) },
  });
  assert.equal(y.datatype, "FP32");
  assert.deepEqual(y.shape, [digits.shape[0], 10]);
  assert.ok(y.data instanceof Float32Array);
  y.data.forEach((value, i) => assert.ok(Math.abs(value - digits.y[i]) < 1e-4, `y[${i}]`));
});

test("raw BYTES tensors go through unchanged", async () => {
  const sent = ["", "hello", "żółw"];
  const { out } = await client.infer("id_bytes", {
    in: { datatype: "BYTES", shape: [1, 3], data: sent },
  });
  assert.equal(out.datatype, "BYTES");
  assert.deepEqual(out.shape, [1, 3]);
  assert.deepEqual(
    out.data.map((b) => b.toString("utf8")),
    sent,
  );
});

test("an unknown model is NOT_FOUND", async () => {
  await assert.rejects(
    client.infer("no_such_model", { x: { datatype: "FP32", shape: [1, 1], data: [0] } }),
    (error) => error instanceof InferGateError && error.status === "NOT_FOUND",
  );
});

test("a model registered with the admin token serves", async () => {
  const registered = await client.registerModel("digits_from_node", { "model.onnx": onnx });
  assert.equal(registered.name, "digits_from_node");
  assert.equal(registered.version, "1");
  const { y } = await client.infer("digits_from_node", {
    x: { datatype: "FP32", shape: digits.shape, data: Float32Array.from(digits.x) },
  });
  y.data.forEach((value, i) => assert.ok(Math.abs(value - digits.y[i]) < 1e-4, `y[${i}]`));
});

test("registering without the token is UNAUTHENTICATED", async () => {
  await assert.rejects(
    anonymous.registerModel("refused", { "model.onnx": onnx }),
    (error) => error instanceof InferGateError && error.status === "UNAUTHENTICATED",
  );
});
