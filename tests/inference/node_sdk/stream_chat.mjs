// One streamed chat and one budget-refused request through the gateway with the official openai Node SDK.
// Usage: node stream_chat.mjs BASE_URL KEY BLOCKED_KEY MODEL; prints one JSON line.
import OpenAI from "openai";

const [, , baseURL, apiKey, blockedKey, model] = process.argv;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 2 });
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "one two three" }], max_tokens: 4, stream: true,
});
let text = "";
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";

const blocked = new OpenAI({ baseURL, apiKey: blockedKey, maxRetries: 2 });
let refused = null;
try {
  await blocked.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] });
} catch (error) {
  refused = { status: error.status, code: error.code, retryAfter: error.headers?.get?.("retry-after") ?? null };
}
console.log(JSON.stringify({ text, refused }));
