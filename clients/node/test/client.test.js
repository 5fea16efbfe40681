// The client against a live server: handspring's app on loopback over a tiny random CLIP
// (fp32), HTTP and gRPC, with an API key; started by test/fixtures.py.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import {
  AuthenticationError,
  HandspringClient,
  HandspringGrpcClient,
  InvalidRequestError,
  NotFoundError,
  TimeoutError,
  TooLargeError,
  UnavailableError,
} from '../src/index.js';
import { ExportedModel } from '../src/embedder/index.js';
import { PROTO_PATH } from '../src/grpc-client.js';
import { REPO, scratch, skipReason, startServer } from '../test-support/python.js';
import { photoJpeg } from '../test-support/images.js';

const KEY = 'node-test-key';
const TEXTS = ['a photo of a cat', 'ein Hund', 'naïve café ☕', '🌅 at dusk'];
const MODEL = 'clip';
const DIM = 40;
const MAX_ITEMS = 8; // fixtures.py serves with --max-items 8

function assertSameVectors(a, b, maxAbs = 0) {
  assert.equal(a.length, b.length);
  a.forEach((row, i) => {
    assert.equal(row.length, b[i].length);
    row.forEach((v, j) => assert.ok(Math.abs(v - b[i][j]) <= maxAbs, `row ${i}[${j}]: ${v} vs ${b[i][j]}`));
  });
}

/** A TCP port that takes connections and never answers. */
async function silentServer() {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** A port nothing listens on. */
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('client against a live handspring serve', { skip: skipReason() ?? false }, () => {
  let work;
  let server;
  let http;
  let grpc;
  let images;

  before(async () => {
    images = await Promise.all([photoJpeg(640, 480, 1), photoJpeg(300, 500, 2)]);
    work = scratch('handspring-node-serve-');
    server = await startServer(work.folder, KEY);
    http = new HandspringClient({ url: server.url, apiKey: KEY });
    grpc = new HandspringGrpcClient({ address: server.grpc, apiKey: KEY });
  });

  after(async () => {
    grpc?.close();
    await server?.stop();
    work?.remove();
  });

  test('HTTP: models, probes, texts and images', async () => {
    assert.deepEqual(await http.models(), [MODEL]);
    assert.equal(await http.live(), true);
    assert.equal(await http.ready(), true);
    const texts = await http.embedTexts(TEXTS, { model: MODEL });
    assert.equal(texts.length, TEXTS.length);
    for (const v of texts) {
      assert.ok(v instanceof Float32Array && v.length === DIM);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
    }
    const { embeddings, model, usage } = await http.embed(images, { model: MODEL, modality: 'image' });
    assert.equal(model, MODEL);
    assert.equal(embeddings.length, 2);
    assert.ok(usage && typeof usage === 'object');
  });

  test('gRPC: health, metadata, and the same vectors as HTTP', async () => {
    assert.equal(await grpc.serverLive(), true);
    assert.equal(await grpc.serverReady(), true);
    assert.equal(await grpc.modelReady(MODEL), true);
    assert.equal((await grpc.serverMetadata()).name, 'handspring');
    const meta = await grpc.modelMetadata(MODEL);
    assert.deepEqual(
      meta.inputs.map((t) => [t.name, t.datatype]),
      [
        ['image', 'BYTES'],
        ['text', 'BYTES'],
      ],
    );
    assert.deepEqual(
      meta.outputs.map((t) => [t.name, t.datatype, t.shape]),
      [['embedding', 'FP32', [-1, DIM]]],
    );

    // A vector does not depend on what shared its batch: the two protocols agree bit for bit.
    assertSameVectors(
      await grpc.embedTexts(TEXTS, { model: MODEL }),
      await http.embedTexts(TEXTS, { model: MODEL }),
    );
    assertSameVectors(
      await grpc.embedImages(images, { model: MODEL }),
      await http.embedImages(images, { model: MODEL }),
    );
    const both = await grpc.infer(MODEL, { text: TEXTS.slice(0, 2), image: images.slice(0, 1) });
    assert.equal(both.embeddings.length, 3);
    assertSameVectors(both.embeddings.slice(2), await http.embedImages(images.slice(0, 1), { model: MODEL }));
  });

  test('dimensions over both protocols', async () => {
    const viaHttp = await http.embedTexts(TEXTS, { model: MODEL, dimensions: 16 });
    const viaGrpc = await grpc.embedTexts(TEXTS, { model: MODEL, dimensions: 16 });
    assertSameVectors(viaGrpc, viaHttp);
    for (const v of viaHttp) {
      assert.equal(v.length, 16);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
    }
  });

  test('the server and the in-process embedder agree on the same checkpoint', async () => {
    const local = await ExportedModel.load(server.export);
    try {
      assertSameVectors(await local.embedTexts(TEXTS), await http.embedTexts(TEXTS, { model: MODEL }), 1e-5);
      assertSameVectors(
        await local.embedImages(images),
        await http.embedImages(images, { model: MODEL }),
        1e-5,
      );
    } finally {
      await local.release();
    }
  });

  test('native route: a bad item gets a null row and a reason', async () => {
    const answer = await http.embedEach('image', [images[0], Buffer.from('not an image')], { model: MODEL });
    assert.equal(answer.embeddings[0].length, DIM);
    assert.equal(answer.embeddings[1], null);
    assert.equal(answer.errors.length, 1);
    assert.equal(answer.errors[0].index, 1);
    assert.match(answer.errors[0].reason, /not an image/);
  });

  test('a missing or wrong key', async () => {
    for (const apiKey of [undefined, 'wrong']) {
      const bare = new HandspringClient({ url: server.url, apiKey });
      await assert.rejects(
        bare.embedTexts(['x']),
        (e) => e instanceof AuthenticationError && e.status === 401,
      );
      assert.equal(await bare.live(), true); // probes need no key
      const bareGrpc = new HandspringGrpcClient({ address: server.grpc, apiKey });
      try {
        await assert.rejects(
          bareGrpc.embedTexts(['x'], { model: MODEL }),
          (e) => e instanceof AuthenticationError && e.code === 'UNAUTHENTICATED' && e.grpcCode === 16,
        );
        assert.equal(await bareGrpc.serverLive(), true);
      } finally {
        bareGrpc.close();
      }
    }
  });

  test('bad input: unknown model, empty text, undecodable image, too many items, bad dimensions', async () => {
    await assert.rejects(http.embedTexts(['x'], { model: 'nope' }), (e) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.match(e.message, /model 'nope' is not served here/);
      return true;
    });
    await assert.rejects(
      grpc.embedTexts(['x'], { model: 'nope' }),
      (e) => e instanceof NotFoundError && e.code === 'NOT_FOUND',
    );

    await assert.rejects(http.embedTexts(['a cat', ''], { model: MODEL }), (e) => {
      assert.ok(e instanceof InvalidRequestError);
      assert.equal(e.status, 400);
      assert.match(e.message, /input\[1\]: the input is empty/);
      return true;
    });

    const junk = Buffer.from('not an image');
    await assert.rejects(http.embedImages([junk], { model: MODEL }), (e) => {
      assert.ok(e instanceof InvalidRequestError);
      assert.equal(e.status, 422);
      assert.match(e.message, /input\[0\]: not an image/);
      return true;
    });
    await assert.rejects(grpc.embedImages([images[0], junk], { model: MODEL }), (e) => {
      assert.ok(e instanceof InvalidRequestError);
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /image\[1\]: not an image/);
      return true;
    });

    const many = Array.from({ length: MAX_ITEMS + 1 }, (_, i) => `text ${i}`);
    await assert.rejects(
      http.embedTexts(many, { model: MODEL }),
      (e) => e instanceof TooLargeError && e.status === 413,
    );
    await assert.rejects(
      grpc.embedTexts(many, { model: MODEL }),
      (e) => e instanceof TooLargeError && e.code === 'RESOURCE_EXHAUSTED',
    );

    await assert.rejects(http.embedTexts(['x'], { model: MODEL, dimensions: 0 }), InvalidRequestError);
    await assert.rejects(grpc.embedTexts(['x'], { model: MODEL, dimensions: 0 }), (e) => {
      assert.ok(e instanceof InvalidRequestError);
      assert.match(e.message, /dimensions/);
      return true;
    });
    await assert.rejects(grpc.embedTexts(['x']), /options\.model/);
  });

  test('unreachable and silent servers', async () => {
    const port = await closedPort();
    await assert.rejects(
      new HandspringClient({ url: `http://127.0.0.1:${port}` }).embedTexts(['x']),
      (e) => e instanceof UnavailableError && e.code === 'ECONNREFUSED',
    );
    const refused = new HandspringGrpcClient({ address: `127.0.0.1:${port}` });
    await assert.rejects(
      refused.serverLive(),
      (e) => e instanceof UnavailableError && e.code === 'UNAVAILABLE',
    );
    refused.close();

    const silent = await silentServer();
    const waiting = new HandspringGrpcClient({ address: `127.0.0.1:${silent.port}`, timeoutMs: 300 });
    try {
      await assert.rejects(
        new HandspringClient({ url: `http://127.0.0.1:${silent.port}`, timeoutMs: 300 }).embedTexts(['x']),
        (e) => e instanceof TimeoutError && /no answer within 300 ms/.test(e.message),
      );
      await assert.rejects(
        waiting.serverLive(),
        (e) => e instanceof TimeoutError && e.code === 'DEADLINE_EXCEEDED',
      );
    } finally {
      waiting.close();
      silent.close();
    }
  });
});

const SERVER_PROTO = `${REPO}/src/handspring/server/grpc/protos/grpc_predict_v2.proto`;

test(
  "the packaged proto is the server's",
  { skip: existsSync(SERVER_PROTO) ? false : 'not in the repository' },
  () => {
    assert.ok(
      readFileSync(PROTO_PATH).equals(readFileSync(SERVER_PROTO)),
      "proto/grpc_predict_v2.proto differs from the server's: copy it again",
    );
  },
);
