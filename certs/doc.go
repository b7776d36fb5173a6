// Package certs loads the webhook's serving certificate, reloads it when its files
// change, and makes throwaway CAs for tests and the demo.
package certs
