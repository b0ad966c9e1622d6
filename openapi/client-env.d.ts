// The generated fetch client names the DOM type BodyInit; this project compiles without the DOM
// lib, and Node's fetch types only expose it as RequestInit['body'].
type BodyInit = NonNullable<RequestInit['body']>;
