package projections

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"
)

// Forged page tokens with the right hash: values are bound, so a query
// never fails on them; they are ErrBadPageToken or a page.
func TestSearchForgedTokens(t *testing.T) {
	t.Parallel()
	s, _, _, _ := trackingFixture(t)
	for _, order := range [][]string{{"params.lr DESC", "metrics.loss", "end_time"}, {"metrics.auc"}, {"tags.team", "run_name", "user_id"}} {
		rs := RunSearch{OrderBy: order, MaxResults: 1}
		p, err := s.q.SearchRuns(testCtx(t), s.project, rs)
		if err != nil || p.NextPageToken == "" {
			t.Fatal(err, p.NextPageToken)
		}
		b, _ := base64.RawURLEncoding.DecodeString(p.NextPageToken)
		var tok searchToken
		if err := json.Unmarshal(b, &tok); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", b)
		vals := []string{`x'); DROP TABLE runs; --`, "Inf", "-Inf", "infinity", "0x1p3", "1e400", "NaN", "9223372036854775807", "-9223372036854775808",
			"99999999999999999999", "", "\xff", "a\x00", uuid.NewString(), "ZZZZZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZZZZZZZZZ", "1_000"}
		for i := range tok.V {
			for _, v := range vals {
				f := tok
				f.V = append([]*string(nil), tok.V...)
				f.V[i] = &v
				for seg := -1; seg <= 3; seg++ {
					f.S = seg
					for _, r := range [][]int{tok.R, {0, 0, 0}, {-1}, {5, 5}} {
						f.R = r
						j, _ := json.Marshal(f)
						rs.PageToken = base64.RawURLEncoding.EncodeToString(j)
						_, err := s.q.SearchRuns(testCtx(t), s.project, rs)
						if err != nil && !errors.Is(err, ErrBadPageToken) {
							t.Fatalf("order %v value %d = %q seg %d ranks %v: %v", order, i, v, seg, r, err)
						}
						if _, err := s.q.SearchRuns(testCtx(t), uuid.NewString(), rs); !errors.Is(err, ErrBadPageToken) {
							t.Fatalf("another project: %v", err)
						}
					}
				}
			}
		}
	}
}
