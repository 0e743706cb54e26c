package projections

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
)

// historyCursor is the position of the last point of a page of a metric
// history (seriesPos: step, timestamp, the chunk's sequence and the
// point's index in it, which together are unique). Hash ties the token to
// its run and key. A rebuild of the projection may chunk the series
// differently, so a token taken before one may skip or repeat points.
type historyCursor struct {
	Hash string `json:"h"`
	Step int64  `json:"s"`
	TS   int64  `json:"t"`
	Seq  int64  `json:"q"`
	Idx  int    `json:"i"`
}

func historyHash(runID, key string) string {
	h := sha256.Sum256([]byte(runID + "\x00" + key))
	return base64.RawURLEncoding.EncodeToString(h[:9])
}

// decodeHistoryCursor refuses a cursor no page wrote, an index beyond
// int32 included (the SQL sort compares it as an integer: it would wrap).
func decodeHistoryCursor(token, hash string) (historyCursor, error) {
	var c historyCursor
	b, err := base64.RawURLEncoding.DecodeString(token)
	if len(token) > 512 || err != nil || json.Unmarshal(b, &c) != nil || c.Hash != hash || c.Seq < 1 || c.Idx < 0 || c.Idx > math.MaxInt32 {
		return historyCursor{}, ErrBadPageToken
	}
	return c, nil
}

// MetricHistoryPage pages a run's series of key in series order (step,
// timestamp, then the order the points were logged in), limit points a
// page (1 to MaxHistory): MLflow's get-history, which a client pages
// through with max_results and page_token. A page reads only the chunks
// from its start on (and the chunk headers before it, from the index).
func (q *Queries) MetricHistoryPage(ctx context.Context, runID, key, pageToken string, limit int) (Page[MetricPoint], error) {
	if limit < 1 || limit > MaxHistory {
		return Page[MetricPoint]{}, fmt.Errorf("metric history: page size %d out of 1..%d", limit, MaxHistory)
	}
	hash := historyHash(runID, key)
	after := beforeSeries
	if pageToken != "" {
		c, err := decodeHistoryCursor(pageToken, hash)
		if err != nil {
			return Page[MetricPoint]{}, err
		}
		after = seriesPos{Step: c.Step, TS: c.TS, Seq: c.Seq, Idx: c.Idx}
	}
	page := Page[MetricPoint]{Items: []MetricPoint{}}
	var last seriesPos
	err := q.readSeries(ctx, func(tx pgx.Tx) error {
		return eachPoint(ctx, tx, runID, key, after, func(p MetricPoint, pos seriesPos) (bool, error) {
			if len(page.Items) == limit {
				b, _ := json.Marshal(historyCursor{Hash: hash, Step: last.Step, TS: last.TS, Seq: last.Seq, Idx: last.Idx})
				page.NextPageToken = base64.RawURLEncoding.EncodeToString(b)
				return false, nil
			}
			page.Items, last = append(page.Items, p), pos
			return true, nil
		})
	})
	return page, err
}
