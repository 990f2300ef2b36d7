import { message } from "../../message";

export const dynamic = "force-dynamic";

export function GET() {
  return Response.json({
    message,
    greeting: process.env.GREETING ?? null,
    time: new Date().toISOString(),
  });
}
