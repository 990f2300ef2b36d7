export const message = "hello from revision A";
