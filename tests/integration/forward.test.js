'use strict';
// One door to the whole API: any other path under /v1/ is forwarded with
// the proxy's key, never cached, its answer relayed as it comes (JSON, an
// event stream, file bytes); [server] forward = responses narrows the door
// back; [client] allow lists what a client may use.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

function loadOpenAI() {
	try {
		return require(require.resolve('openai', { paths: [path.join(__dirname, '..')] }));
	} catch {
		return require('openai');
	}
}

/* A key file for the proxy, and what the mock requires. */
function keyFile() {
	const f = path.join(h.tmpdir(), 'k');
	fs.writeFileSync(f, 'sk-proxy-held\n', { mode: 0o600 });
	return f;
}

/*
 * The rest of the API, in the mock: chat completions (JSON or a stream
 * held after its first chunk until release()), embeddings, models, files
 * (upload kept as raw bytes, content sent back as they were).
 */
function restOfApi(up) {
	const st = { files: new Map(), uploads: new Map(), release: null, bodies: [] };
	let held = null;
	st.released = new Promise((r) => { held = r; });
	st.release = () => held();
	up.override = (req, res, body) => {
		const p = req.url.split('?')[0];
		if (p.startsWith('/v1/responses')) return false;
		st.bodies.push({ method: req.method, url: req.url, raw: req.rawBody });
		if (p === '/v1/chat/completions' && req.method === 'POST') {
			const j = JSON.parse(body);
			const base = { id: 'chatcmpl-1', created: 1, model: j.model };
			if (!j.stream) {
				up.sendJSON(res, 200, { ...base, object: 'chat.completion', choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'hello there' } }] });
				return true;
			}
			res.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': 'req_chat' });
			const chunk = (delta, fin = null) => `data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: fin }] })}\n\n`;
			res.write(chunk({ role: 'assistant', content: 'hel' }));
			st.released.then(() => {
				res.write(chunk({ content: 'lo' }));
				res.write(chunk({}, 'stop'));
				res.end('data: [DONE]\n\n');
			});
			return true;
		}
		if (p === '/v1/embeddings' && req.method === 'POST') {
			const j = JSON.parse(body);
			const input = [].concat(j.input);
			up.sendJSON(res, 200, { object: 'list', model: j.model, data: input.map((_, i) => ({ object: 'embedding', index: i, embedding: [0.25, -0.5, i] })), usage: { prompt_tokens: 1, total_tokens: 1 } });
			return true;
		}
		if (p === '/v1/models' && req.method === 'GET') {
			up.sendJSON(res, 200, { object: 'list', data: [{ id: 'gpt-4o', object: 'model', created: 1, owned_by: 'openai' }] });
			return true;
		}
		if (p === '/v1/files' && req.method === 'POST') {
			const id = `file-${st.files.size + 1}`;
			const file = filePart(req.headers['content-type'], req.rawBody);
			st.uploads.set(id, req.rawBody);
			st.files.set(id, file);
			up.sendJSON(res, 200, { id, object: 'file', bytes: file.length, created_at: 1, filename: 'x.bin', purpose: 'assistants' });
			return true;
		}
		if (p === '/v1/conversations' && req.method === 'POST') {
			const id = `conv_${crypto.randomBytes(8).toString('hex')}`;
			st.conversations = (st.conversations || 0) + 1;
			up.sendJSON(res, 200, { id, object: 'conversation', created_at: 1, metadata: {} });
			return true;
		}
		const cv = /^\/v1\/conversations\/([^/]+)(\/items)?$/.exec(p);
		if (cv) {
			if (cv[2]) up.sendJSON(res, 200, { object: 'list', data: [], first_id: null, last_id: null, has_more: false });
			else if (req.method === 'DELETE') up.sendJSON(res, 200, { id: cv[1], object: 'conversation.deleted', deleted: true });
			else up.sendJSON(res, 200, { id: cv[1], object: 'conversation', created_at: 1, metadata: {} });
			return true;
		}
		const m = /^\/v1\/files\/([^/]+)\/content$/.exec(p);
		if (m && req.method === 'GET') {
			const b = st.files.get(m[1]) || Buffer.alloc(0);
			res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(b.length), 'content-disposition': 'attachment; filename="x.bin"' });
			res.end(b);
			return true;
		}
		up.sendError(res, 404, `Invalid URL (${req.method} ${p})`, 'invalid_request_error', null);
		return true;
	};
	return st;
}

/* The bytes of the part of a multipart body that holds a file. */
function filePart(contentType, body) {
	const m = /boundary=([^;]+)/.exec(contentType || '');
	if (!m) return Buffer.alloc(0);
	const sep = Buffer.from(`--${m[1]}`);
	for (let at = body.indexOf(sep); at >= 0;) {
		const next = body.indexOf(sep, at + sep.length);
		if (next < 0) break;
		const part = body.subarray(at + sep.length, next);
		const he = part.indexOf('\r\n\r\n');
		if (he >= 0 && /filename=/.test(part.subarray(0, he).toString('latin1'))) {
			return part.subarray(he + 4, part.length - 2);	/* less the CRLF before the next boundary */
		}
		at = next;
	}
	return Buffer.alloc(0);
}

/* The mock keeps each request's raw body bytes, for byte-for-byte checks. */
async function stack(opts, fn) {
	const up = await h.startUpstream(opts.upstream || {});
	up.server.removeAllListeners('request');
	up.server.on('request', (req, res) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => {
			req.rawBody = Buffer.concat(chunks);
			up.handle(req, res, req.rawBody.toString('utf8')).catch((e) => {
				try { res.destroy(e); } catch { /* ignore */ }
			});
		});
	});
	return h.withProxy(up, opts.proxy || {}, fn);
}

test('other /v1/ paths go upstream with the proxy\'s key, byte for byte, never cached', async () => {
	await stack({ upstream: { requireKey: 'sk-proxy-held' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const st = restOfApi(up);
		const body = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"x":1.50}';
		const r = await h.request(`${px.url}/v1/chat/completions?a=%41&b=c+d&b=e`, { method: 'POST', headers: { ...bearer('sk-client'), 'content-type': 'application/json' }, body });
		assert.equal(r.status, 200, r.body);
		assert.equal(r.json().choices[0].message.content, 'hello there');
		h.assertXCache(r, 'BYPASS', 'a forwarded path');
		const seen = up.requests.at(-1);
		assert.equal(seen.headers.authorization, 'Bearer sk-proxy-held', 'the proxy\'s key, never the client\'s');
		assert.equal(seen.url, '/v1/chat/completions?a=%41&b=c+d&b=e', 'the query byte for byte');
		assert.equal(st.bodies.at(-1).raw.toString('latin1'), body, 'the body byte for byte');
		// Never cached: a second identical GET reaches the upstream again.
		for (let i = 0; i < 2; i++) {
			const m = await h.request(`${px.url}/v1/models`);
			assert.equal(m.status, 200);
			assert.equal(m.json().data[0].id, 'gpt-4o');
		}
		assert.equal(up.count('GET', '/v1/models'), 2);
		// The upstream's own errors pass through.
		const nf = await h.request(`${px.url}/v1/nope/deeper`, { method: 'DELETE' });
		h.assertOpenAIError(nf, 404, 'an unknown upstream path');
		assert.match(nf.json().error.message, /Invalid URL \(DELETE \/v1\/nope\/deeper\)/);
	});
});

test('a streamed chat completion reaches the client chunk by chunk', async () => {
	await stack({}, async ({ up, px }) => {
		const st = restOfApi(up);
		const s = await h.openSSE(`${px.url}/v1/chat/completions`, { method: 'POST', body: { model: 'gpt-4o', messages: [], stream: true } });
		assert.equal(s.status, 200);
		assert.match(s.headers['content-type'], /^text\/event-stream/);
		const first = await h.within(s.firstEvent, 5000, 'the first chunk, while the upstream holds the rest');
		assert.equal(JSON.parse(first.data).choices[0].delta.content, 'hel');
		st.release();
		const { events } = await h.within(s.done, 5000, 'the rest of the stream');
		assert.equal(events.at(-1).data, '[DONE]');
	});
});

test('a 5 MB upload goes up byte for byte, and its content comes back streamed', async () => {
	await stack({ proxy: { config: '[server]\nmax_body_size = 16m\n' } }, async ({ up, px }) => {
		const st = restOfApi(up);
		const blob = crypto.randomBytes(5 * 1024 * 1024);
		const boundary = '----respcache' + crypto.randomBytes(8).toString('hex');
		const multipart = Buffer.concat([
			Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n` +
				`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
			blob, Buffer.from(`\r\n--${boundary}--\r\n`)]);
		const r = await h.request(`${px.url}/v1/files`, { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body: multipart, timeout: 30000 });
		assert.equal(r.status, 200, r.body.slice(0, 200));
		const id = r.json().id;
		assert.ok(st.uploads.get(id).equals(multipart), 'the upstream got the multipart body as sent');
		assert.match(up.requests.at(-1).headers['content-type'], new RegExp(`boundary=${boundary}$`));
		const c = await h.request(`${px.url}/v1/files/${id}/content`, { timeout: 30000 });
		assert.equal(c.status, 200);
		assert.ok(c.raw.equals(blob), 'the file came back as it was');
		assert.equal(c.headers['content-disposition'], 'attachment; filename="x.bin"');
		assert.equal(c.headers['content-length'], undefined, 'relayed as it came (chunked), not held whole');
	});
});

test('forward = responses keeps the door narrow: other paths are 404 and never sent', async () => {
	await stack({ proxy: { config: '[server]\nforward = responses\n' } }, async ({ up, px }) => {
		restOfApi(up);
		for (const [m, p] of [['GET', '/v1/models'], ['POST', '/v1/chat/completions'], ['DELETE', '/v1/files/file-1']]) {
			const r = await h.request(px.url + p, { method: m, body: m === 'POST' ? { model: 'x' } : undefined });
			const j = h.assertOpenAIError(r, 404, `${m} ${p}`);
			assert.equal(j.error.code, 'unknown_route');
		}
		assert.equal(up.requests.length, 0);
		const id = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`)).status, 200, '/v1/responses still works');
	});
});

test('[client] allow: a client outside its prefixes gets 403 and nothing reaches the upstream', async () => {
	const f = keyFile();
	const config = `[credential team]\nkey_file = ${f}\n
[client batch]\ntoken_sha256 = ${sha('tok-batch')}\ncredential = team\nallow = /v1/embeddings, /v1/models/
[client app]\ntoken_sha256 = ${sha('tok-app')}\ncredential = team\n`;
	await stack({ upstream: { requireKey: 'sk-proxy-held' }, proxy: { config } }, async ({ up, px }) => {
		restOfApi(up);
		const id = up.seed();
		const emb = await h.request(`${px.url}/v1/embeddings`, { method: 'POST', headers: bearer('tok-batch'), body: { model: 'e', input: 'x' } });
		assert.equal(emb.status, 200, emb.body);
		assert.equal((await h.request(`${px.url}/v1/models`, { headers: bearer('tok-batch') })).status, 200, 'a prefix with a trailing slash');
		const before = up.requests.length;
		for (const [m, p] of [['POST', '/v1/chat/completions'], ['GET', `/v1/responses/${id}`], ['POST', '/v1/responses'],
			['GET', '/v1/embeddingsX'], ['GET', '/v1/files/file-1/content']]) {
			const r = await h.request(px.url + p, { method: m, headers: bearer('tok-batch'), body: m === 'POST' ? { model: 'x', input: 'y' } : undefined });
			const j = h.assertOpenAIError(r, 403, `batch: ${m} ${p}`);
			assert.equal(j.error.code, 'route_not_allowed');
		}
		for (const p of ['/v1/embeddings/../chat/completions', '/v1/embeddings/%2e%2e/chat/completions', '/v1/embeddings%2F..%2Fchat']) {
			const r = await h.rawRequest(px.port, `POST ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-batch\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
			assert.equal(r.status, 400, `${p}: ${r.body}`);
		}
		assert.equal(up.requests.length, before, 'nothing refused reached the upstream');
		// A client with no allow list uses the whole door.
		const chat = await h.request(`${px.url}/v1/chat/completions`, { method: 'POST', headers: bearer('tok-app'), body: { model: 'x', messages: [] } });
		assert.equal(chat.status, 200, chat.body);
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-app') })).status, 200);
	});
});

test('a 401 for the proxy\'s key on a forwarded path is the proxy\'s own answer', async () => {
	const dir = h.tmpdir();
	const f = path.join(dir, 'k');
	fs.writeFileSync(f, 'sk-proj-revoked-WXYZ\n', { mode: 0o600 });
	await stack({ upstream: { requireKey: 'sk-live' }, proxy: { keyFile: f } }, async ({ px }) => {
		const r = await h.request(`${px.url}/v1/models`);
		const j = h.assertOpenAIError(r, 401, 'forwarded GET');
		assert.equal(j.error.code, 'upstream_key_refused');
		assert.doesNotMatch(r.body, /WXYZ/);
	});
});

test('the official openai SDK: chat (plain and stream), embeddings, models and conversations through the proxy\'s key', async () => {
	let OpenAI;
	try {
		const mod = loadOpenAI();
		OpenAI = mod.OpenAI || mod.default || mod;
	} catch (e) {
		assert.fail(`the openai package is not installed: ${e.message}`);
	}
	await stack({ upstream: { requireKey: 'sk-proxy-held' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const st = restOfApi(up);
		const oa = new OpenAI({ baseURL: `${px.url}/v1`, apiKey: 'placeholder', maxRetries: 0, timeout: 10000 });
		const c = await oa.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
		assert.equal(c.choices[0].message.content, 'hello there');
		st.release();
		const stream = await oa.chat.completions.create({ model: 'gpt-4o', messages: [], stream: true });
		let text = '';
		for await (const chunk of stream) text += chunk.choices[0]?.delta?.content || '';
		assert.equal(text, 'hello');
		const e = await oa.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
		assert.equal(e.data.length, 2);
		const models = [];
		for await (const m of oa.models.list()) models.push(m.id);
		assert.deepEqual(models, ['gpt-4o']);
		const conv = await oa.conversations.create({});
		assert.ok(conv.id.startsWith('conv_'));
		const items = [];
		for await (const it of oa.conversations.items.list(conv.id)) items.push(it);
		assert.deepEqual(items, []);
		const inConv = await oa.responses.create({ model: 'gpt-4o', input: 'hi', conversation: conv.id });
		assert.equal(inConv.status, 'completed', 'a response created in the conversation');
		const posted = up.requests.find((r) => r.method === 'POST' && r.path === '/v1/responses');
		assert.equal(JSON.parse(posted.body).conversation, conv.id, 'its conversation went upstream as sent');
		const del = await oa.conversations.delete(conv.id);
		assert.equal(del.deleted, true);
		const blob = crypto.randomBytes(5 * 1024 * 1024);
		const { toFile } = loadOpenAI();
		const file = await oa.files.create({ file: await toFile(blob, 'x.bin'), purpose: 'assistants' });
		assert.equal(file.bytes, blob.length, 'the upstream got the whole file');
		const content = await oa.files.content(file.id);
		assert.ok(Buffer.from(await content.arrayBuffer()).equals(blob), 'files.content gives it back whole');
		for (const r of up.requests) assert.equal(r.headers.authorization, 'Bearer sk-proxy-held');
	});
});

test('conversations belong to their creator: other clients get 404 on every route and in a create', async () => {
	const f = keyFile();
	const clients = `[credential team]\nkey_file = ${f}\n
[client a]\ntoken_sha256 = ${sha('tok-a')}\ncredential = team\n
[client b]\ntoken_sha256 = ${sha('tok-b')}\ncredential = team\n`;
	await stack({ proxy: { config: clients } }, async ({ up, px }) => {
		restOfApi(up);
		const c = await h.request(`${px.url}/v1/conversations`, { method: 'POST', headers: bearer('tok-a'), body: { items: [] } });
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		assert.equal((await h.request(`${px.url}/v1/conversations/${id}`, { headers: bearer('tok-a') })).status, 200, 'the creator reads it');
		const before = up.requests.length;
		for (const [m, p] of [['GET', `/v1/conversations/${id}`], ['GET', `/v1/conversations/${id}/items`],
			['POST', `/v1/conversations/${id}/items`], ['DELETE', `/v1/conversations/${id}`]]) {
			const r = await h.request(px.url + p, { method: m, headers: bearer('tok-b'), body: m === 'POST' ? { items: [] } : undefined });
			const j = h.assertOpenAIError(r, 404, `b: ${m} ${p}`);
			assert.equal(j.error.message, `Conversation with id '${id}' not found.`);
		}
		for (const conversation of [id, { id }]) {
			const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-b'), body: { model: 'gpt-4o', input: 'x', conversation } });
			const j = h.assertOpenAIError(r, 404, `b: a create naming ${JSON.stringify(conversation)}`);
			assert.equal(j.error.message, `Conversation with id '${id}' not found.`);
		}
		h.assertOpenAIError(await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: { ...bearer('tok-b'), 'content-type': 'application/json' },
			body: '{"model":"gpt-4o","input":"x","conversation":{"id":7}}' }), 400, 'a conversation id that is not a string');
		assert.equal(up.requests.length, before, 'nothing refused reached the upstream');
		// The creator continues it; an id created elsewhere follows unknown_owner.
		const ok = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-a'), body: { model: 'gpt-4o', input: 'x', conversation: id } });
		assert.equal(ok.status, 200, ok.body);
		assert.equal((await h.request(`${px.url}/v1/conversations/conv_elsewhere`, { headers: bearer('tok-b') })).status, 200);
	});
	await stack({ proxy: { config: `[server]\nownership = off\n${clients}` } }, async ({ up, px }) => {
		restOfApi(up);
		const c = await h.request(`${px.url}/v1/conversations`, { method: 'POST', headers: bearer('tok-a'), body: {} });
		assert.equal((await h.request(`${px.url}/v1/conversations/${c.json().id}`, { headers: bearer('tok-b') })).status, 200, 'ownership = off shares them');
	});
});
