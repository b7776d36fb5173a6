# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY webhook/ webhook/
COPY remote/ remote/
COPY certs/ certs/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/secret-relay ./cmd/secret-relay

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/secret-relay /secret-relay
USER 65532:65532
ENTRYPOINT ["/secret-relay"]
CMD ["serve"]
