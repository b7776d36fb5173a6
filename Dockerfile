# syntax=docker/dockerfile:1
# Build: a static binary, no cgo, stamped with the version.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY certs/ certs/
COPY controllers/ controllers/
COPY cmd/ cmd/
COPY relay/ relay/
COPY remote/ remote/
COPY webhook/ webhook/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/secret-relay ./cmd/secret-relay

# Run: distroless, nonroot, nothing but the binary.
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/secret-relay /secret-relay
USER 65532:65532
ENTRYPOINT ["/secret-relay"]
CMD ["serve"]
