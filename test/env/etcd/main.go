// Command etcd-embed runs a single-member etcd for the Conveyor test bed.
//
// usage: etcd-embed <data-dir> <client-url> <peer-url>
package main

import (
	"log"
	"net/url"
	"os"

	"go.etcd.io/etcd/server/v3/embed"
)

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		log.Fatalf("bad url %q: %v", s, err)
	}
	return *u
}

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: etcd-embed <data-dir> <client-url> <peer-url>")
	}
	cfg := embed.NewConfig()
	cfg.Dir = os.Args[1]
	client, peer := mustURL(os.Args[2]), mustURL(os.Args[3])
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "warn"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	log.Printf("etcd ready on %s", client.String())
	log.Fatal(<-e.Err())
}
