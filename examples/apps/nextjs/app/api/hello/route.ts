import { connection } from "next/server";
import { message } from "../../message";

export async function GET() {
  await connection();
  return Response.json({
    message,
    greeting: process.env.GREETING ?? null,
    time: new Date().toISOString(),
  });
}
